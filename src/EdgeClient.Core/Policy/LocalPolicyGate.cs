using System.Globalization;
using Federated.Aggregation.Privacy;

namespace Federated.EdgeClient.Policy;

/// <summary>What a round asks of this machine, taken from the round manifest and the connection.</summary>
/// <param name="Plan">The round's privacy plan as the manifest fixes it (<see cref="ManifestPrivacy"/>), for the ledger to
/// price the round as the coordinator does.</param>
/// <param name="SamplingRate">The Poisson rate at which this client was sampled; 1 when it was picked by count,
/// since then no amplification by sampling can be claimed.</param>
/// <param name="Participants">n: the round's SecAgg+ participants, as the manifest names them.</param>
/// <param name="Threshold">t: the round's SecAgg+ Shamir threshold on each neighbourhood (with the complete graph, also
/// the fewest survivors whose sum is released).</param>
internal sealed record RoundTerms(
    string RunId,
    long Round,
    NoiseMechanismKind Mechanism,
    double NoiseMultiplier,
    double SamplingRate,
    IReadOnlyList<string> TargetModules,
    int Rank,
    string CoordinatorCertificateSha256,
    int Participants,
    int Threshold,
    PrivacyPlanParameters? Plan = null)
{
    /// <summary>k: neighbours per participant in the SecAgg+ graph; null: the complete graph (n - 1).</summary>
    public int? Neighbours { get; init; }

    /// <summary>The fewest survivors whose sum is released, as the round is priced (dp.min_survivors); null: <see cref="Threshold"/>.</summary>
    public int? MinSurvivors { get; init; }

    /// <summary>Share holders of one client: its neighbours plus itself (n for the complete graph).</summary>
    public int Neighbourhood => (Neighbours ?? Participants - 1) + 1;

    /// <summary>The release threshold the noise is priced for.</summary>
    public int ReleaseThreshold => MinSurvivors ?? Threshold;

    /// <summary>False for a record-only round: the aggregate carries no client-level noise and the client-level ledger is not charged.</summary>
    public bool ClientLevel { get; init; } = true;

    /// <summary>The round's DP-SGD work at this machine's own record count (privacy_unit record or both); null otherwise.</summary>
    public RecordLevelRound? Record { get; init; }
}

/// <summary>The gate's answer: accepted, or declined naming the policy rule that refused.</summary>
/// <param name="LastChargedRound">With <see cref="LocalPolicyGate.ReplayedRoundRule"/>: the last round of the run this
/// machine was charged for.</param>
internal sealed record PolicyDecision(bool Accepted, string? Rule, string Message, long? LastChargedRound = null)
{
    /// <summary>On an accepted round: the run's epsilon with this round charged, at the policy's delta.</summary>
    public double? RunEpsilon { get; init; }

    /// <summary>On an accepted round: this machine's lifetime epsilon with this round charged.</summary>
    public double? LifetimeEpsilon { get; init; }

    /// <summary>On an accepted round: the run's worst-case epsilon from this machine's own noise share alone.</summary>
    public double? WorstCaseRunEpsilon { get; init; }

    /// <summary>The delta the epsilons above are stated at (the policy's).</summary>
    public double? Delta { get; init; }

    public static PolicyDecision Accept(string message) => new(true, null, message);

    public static PolicyDecision Decline(string rule, string message) => new(false, rule, message);
}

/// <summary>
/// Holds every round manifest against the data holder's policy and local ledger. <see cref="Check"/> decides before
/// training; <see cref="ChargeBeforeUpload"/> re-checks and charges the ledger durably right before the update
/// leaves the machine, so a declined or failed round costs nothing and an uploaded one is always on record.
/// </summary>
public sealed partial class LocalPolicyGate(LocalPolicy policy, LocalPrivacyLedger ledger, TimeProvider time)
{
    /// <summary>The rule a round is declined by when this machine was already charged for it or a later round of its run.</summary>
    public const string ReplayedRoundRule = "replayed_round";

    /// <summary>The rules whose decline is a budget decline (the rest are policy declines).</summary>
    internal static readonly IReadOnlySet<string> BudgetRules = new HashSet<string>(StringComparer.Ordinal)
    {
        "max_epsilon_per_run", "max_epsilon_lifetime", "max_epsilon_per_30_days", "max_worst_case_epsilon_per_run", "max_worst_case_epsilon_lifetime",
        MaxRecordEpsilonRule, MaxRecordEpsilonLifetimeRule,
    };

    /// <summary>The rule a round is declined by when its record-level epsilon would pass the policy's per-run cap (or a record-only round meets a policy without one).</summary>
    public const string MaxRecordEpsilonRule = "max_record_epsilon";

    /// <summary>The rule a round is declined by when this machine's lifetime record-level epsilon would pass the policy's cap.</summary>
    public const string MaxRecordEpsilonLifetimeRule = "max_record_epsilon_lifetime";

    /// <summary>The rule a round is declined by when this machine cannot price its record-level parameters.</summary>
    public const string RecordParametersRule = "record_parameters";

    private readonly object _gate = new();

    /// <summary>
    /// Refuses a round this machine was already charged for, or one numbered at or below the last round of its run it was
    /// charged for: a coordinator that re-invites a round (a lie, or a restored backup of its state) would otherwise get a
    /// second, independently noised release of the same data for one charge. Round numbers of a run only increase.
    /// </summary>
    internal PolicyDecision? CheckReplay(string runId, long round)
    {
        lock (_gate)
        {
            return ReplayOf(runId, round);
        }
    }

    private PolicyDecision? ReplayOf(string runId, long round) =>
        ledger.LastRound(runId) is { } last && round <= last
            ? new PolicyDecision(false, ReplayedRoundRule,
                $"run {runId} round {round} is not after round {last}, the last round of this run this machine was charged for; it never uploads twice for one round",
                last)
            : null;

    internal PolicyDecision Check(RoundTerms terms)
    {
        ArgumentNullException.ThrowIfNull(terms);
        lock (_gate)
        {
            return Evaluate(terms);
        }
    }

    internal PolicyDecision ChargeBeforeUpload(RoundTerms terms)
    {
        ArgumentNullException.ThrowIfNull(terms);
        lock (_gate)
        {
            // A round already charged is refused like any replay (never a second upload for one charge).
            PolicyDecision decision = Evaluate(terms);
            if (decision.Accepted)
            {
                // Both units of the round in one transaction, before anything derived from the data leaves the machine.
                ledger.Record(terms.ClientLevel ? ToCharge(terms) : null, ToRecordCharge(terms));
            }
            return decision;
        }
    }

    private PolicyDecision Evaluate(RoundTerms terms)
    {
        string F(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);

        if (ReplayOf(terms.RunId, terms.Round) is { } replay)
        {
            return replay;
        }

        if (policy.CoordinatorCertificateSha256 is { } pin
            && !string.Equals(pin, terms.CoordinatorCertificateSha256, StringComparison.OrdinalIgnoreCase))
        {
            return PolicyDecision.Decline("coordinator_certificate_sha256",
                $"the coordinator's certificate {terms.CoordinatorCertificateSha256} is not the pinned one");
        }
        if (RecordLevelRefusal(terms) is { } recordRefused)
        {
            return recordRefused;
        }
        if (terms.ClientLevel && !policy.AllowedMechanisms.Contains(terms.Mechanism))
        {
            return PolicyDecision.Decline("allowed_mechanisms",
                $"mechanism {LocalPolicy.MechanismName(terms.Mechanism)} is not allowed (allowed: {string.Join(", ", policy.AllowedMechanisms.Select(LocalPolicy.MechanismName))})");
        }
        if (terms.ClientLevel && (!(terms.NoiseMultiplier >= policy.MinNoiseMultiplier) || double.IsInfinity(terms.NoiseMultiplier)))
        {
            return PolicyDecision.Decline("min_noise_multiplier",
                $"noise multiplier {F(terms.NoiseMultiplier)} is below the minimum {F(policy.MinNoiseMultiplier)}");
        }
        if (!(terms.SamplingRate > 0 && terms.SamplingRate <= 1))
        {
            return PolicyDecision.Decline("sampling_rate", $"sampling rate {F(terms.SamplingRate)} is outside (0, 1]");
        }
        string? module = terms.TargetModules.FirstOrDefault(m => !policy.AllowedTargetModules.Contains(m, StringComparer.Ordinal));
        if (module is not null)
        {
            return PolicyDecision.Decline("allowed_target_modules", $"target module {module} is not allowed");
        }
        if (terms.Rank > policy.MaxRank || terms.Rank < 1)
        {
            return PolicyDecision.Decline("max_rank", $"LoRA rank {terms.Rank} is outside 1..{policy.MaxRank}");
        }
        // t > (k + 1)/2 on each neighbourhood of k + 1 share holders (n with the complete graph): two survivor sets of t
        // that a coordinator tells different holders of one client's shares must overlap, so it cannot collect both the
        // self-mask seed and the mask key of that client (Bonawitz et al. 2017, Sec. 4; per neighbourhood, Bell et al. 2020, Sec. 4).
        int holders = terms.Neighbourhood;
        if (terms.Participants < 1 || holders < 2 || holders > terms.Participants || 2L * terms.Threshold <= holders || terms.Threshold > holders)
        {
            string of = holders >= terms.Participants ? $"its {terms.Participants} participants" : $"each neighbourhood of {holders} (k = {holders - 1} neighbours plus the client)";
            return PolicyDecision.Decline("threshold_majority",
                $"the round's threshold t = {terms.Threshold} is not above half of {of} (t > (k + 1)/2 is required)");
        }
        // The local minimum bounds the release threshold, the fewest survivors whose sum (and noise) is released; with a
        // sparse graph the Shamir threshold bounds one neighbourhood only.
        if (terms.ReleaseThreshold < policy.MinThreshold || terms.ReleaseThreshold > terms.Participants)
        {
            return PolicyDecision.Decline("min_threshold",
                $"the round releases sums of at least {terms.ReleaseThreshold} of its {terms.Participants} participants; this machine's minimum is {policy.MinThreshold}");
        }
        int today = ledger.RoundsInDayBefore(time.GetUtcNow());
        if (today >= policy.MaxRoundsPerDay)
        {
            return PolicyDecision.Decline("max_rounds_per_day", $"{today} rounds in the last 24 hours already (maximum {policy.MaxRoundsPerDay})");
        }
        if (RecordBudgetRefusal(terms, out string recordSummary) is { } recordOver)
        {
            return recordOver;
        }
        if (!terms.ClientLevel)
        {
            return PolicyDecision.Accept($"run {terms.RunId} round {terms.Round}: record-level only (no client-level noise); {recordSummary}");
        }
        LocalCharge charge = ToCharge(terms);
        double runEpsilon = ledger.Spent(policy.Delta, terms.RunId, charge).Epsilon;
        if (runEpsilon > policy.MaxEpsilonPerRun)
        {
            return PolicyDecision.Decline("max_epsilon_per_run",
                $"run {terms.RunId} would reach epsilon {F(runEpsilon)} at delta {policy.Delta:g3} (maximum {F(policy.MaxEpsilonPerRun)})");
        }
        double lifetimeEpsilon = ledger.Spent(policy.Delta, plus: charge).Epsilon;
        if (lifetimeEpsilon > policy.MaxEpsilonLifetime)
        {
            return PolicyDecision.Decline("max_epsilon_lifetime",
                $"this machine would reach lifetime epsilon {F(lifetimeEpsilon)} at delta {policy.Delta:g3} (maximum {F(policy.MaxEpsilonLifetime)})");
        }
        if (policy.MaxEpsilonPer30Days is { } monthCap)
        {
            double month = ledger.Spent(policy.Delta, plus: charge, since: charge.ChargedAt.AddDays(-30)).Epsilon;
            if (month > monthCap)
            {
                return PolicyDecision.Decline("max_epsilon_per_30_days",
                    $"this machine would reach epsilon {F(month)} over the last 30 days at delta {policy.Delta:g3} (maximum {F(monthCap)})");
            }
        }
        // The worst case: this machine's own noise share alone, as if every other participant were the coordinator's sybil.
        string W(double v) => double.IsFinite(v) ? F(v) : "unbounded (central noise is the coordinator's alone)";
        double worstRun = ledger.WorstCaseEpsilon(policy.Delta, terms.RunId, charge);
        if (policy.MaxWorstCaseEpsilonPerRun is { } worstRunCap && !(worstRun <= worstRunCap))
        {
            return PolicyDecision.Decline("max_worst_case_epsilon_per_run",
                $"run {terms.RunId} would reach worst-case epsilon {W(worstRun)} at delta {policy.Delta:g3} from this machine's own noise share (maximum {F(worstRunCap)})");
        }
        if (policy.MaxWorstCaseEpsilonLifetime is { } worstLifetimeCap)
        {
            double worstLifetime = ledger.WorstCaseEpsilon(policy.Delta, plus: charge);
            if (!(worstLifetime <= worstLifetimeCap))
            {
                return PolicyDecision.Decline("max_worst_case_epsilon_lifetime",
                    $"this machine would reach lifetime worst-case epsilon {W(worstLifetime)} at delta {policy.Delta:g3} (maximum {F(worstLifetimeCap)})");
            }
        }
        return PolicyDecision.Accept(
            $"run {terms.RunId} round {terms.Round}: run epsilon {F(runEpsilon)} of {F(policy.MaxEpsilonPerRun)} (worst case {W(worstRun)}), lifetime {F(lifetimeEpsilon)} of {F(policy.MaxEpsilonLifetime)}"
            + (terms.Record is null ? "" : $"; {recordSummary}")) with
        {
            RunEpsilon = runEpsilon,
            LifetimeEpsilon = lifetimeEpsilon,
            WorstCaseRunEpsilon = worstRun,
            Delta = policy.Delta,
        };
    }

    private LocalRecordCharge? ToRecordCharge(RoundTerms terms) =>
        terms.Record is { } work ? new LocalRecordCharge(terms.RunId, terms.Round, work, time.GetUtcNow()) : null;

    private LocalCharge ToCharge(RoundTerms terms) =>
        new(terms.RunId, terms.Round, terms.Mechanism, terms.NoiseMultiplier, terms.SamplingRate, time.GetUtcNow(), terms.Plan);
}
