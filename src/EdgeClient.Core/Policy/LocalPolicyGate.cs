using System.Globalization;
using Federated.Aggregation.Privacy;

namespace Federated.EdgeClient.Policy;

/// <summary>What a round asks of this machine, taken from the round manifest and the connection.</summary>
/// <param name="Plan">The round's privacy plan as the manifest fixes it (<see cref="ManifestPrivacy"/>), for the ledger to
/// price the round as the coordinator does.</param>
/// <param name="SamplingRate">The Poisson rate at which this client was sampled; 1 when it was picked by count,
/// since then no amplification by sampling can be claimed.</param>
internal sealed record RoundTerms(
    string RunId,
    long Round,
    NoiseMechanismKind Mechanism,
    double NoiseMultiplier,
    double SamplingRate,
    IReadOnlyList<string> TargetModules,
    int Rank,
    string CoordinatorCertificateSha256,
    PrivacyPlanParameters? Plan = null);

/// <summary>The gate's answer: accepted, or declined naming the policy rule that refused.</summary>
internal sealed record PolicyDecision(bool Accepted, string? Rule, string Message)
{
    public static PolicyDecision Accept(string message) => new(true, null, message);

    public static PolicyDecision Decline(string rule, string message) => new(false, rule, message);
}

/// <summary>
/// Holds every round manifest against the data holder's policy and local ledger. <see cref="Check"/> decides before
/// training; <see cref="ChargeBeforeUpload"/> re-checks and charges the ledger durably right before the update
/// leaves the machine, so a declined or failed round costs nothing and an uploaded one is always on record.
/// </summary>
public sealed class LocalPolicyGate(LocalPolicy policy, LocalPrivacyLedger ledger, TimeProvider time)
{
    private readonly object _gate = new();

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
            if (ledger.IsCharged(terms.RunId, terms.Round))
            {
                return PolicyDecision.Accept($"run {terms.RunId} round {terms.Round} was already charged");
            }
            PolicyDecision decision = Evaluate(terms);
            if (decision.Accepted)
            {
                ledger.Record(ToCharge(terms));
            }
            return decision;
        }
    }

    private PolicyDecision Evaluate(RoundTerms terms)
    {
        string F(double v) => v.ToString("0.####", CultureInfo.InvariantCulture);

        if (policy.CoordinatorCertificateSha256 is { } pin
            && !string.Equals(pin, terms.CoordinatorCertificateSha256, StringComparison.OrdinalIgnoreCase))
        {
            return PolicyDecision.Decline("coordinator_certificate_sha256",
                $"the coordinator's certificate {terms.CoordinatorCertificateSha256} is not the pinned one");
        }
        if (!policy.AllowedMechanisms.Contains(terms.Mechanism))
        {
            return PolicyDecision.Decline("allowed_mechanisms",
                $"mechanism {LocalPolicy.MechanismName(terms.Mechanism)} is not allowed (allowed: {string.Join(", ", policy.AllowedMechanisms.Select(LocalPolicy.MechanismName))})");
        }
        if (!(terms.NoiseMultiplier >= policy.MinNoiseMultiplier) || double.IsInfinity(terms.NoiseMultiplier))
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
        int today = ledger.RoundsInDayBefore(time.GetUtcNow());
        if (today >= policy.MaxRoundsPerDay)
        {
            return PolicyDecision.Decline("max_rounds_per_day", $"{today} rounds in the last 24 hours already (maximum {policy.MaxRoundsPerDay})");
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
        return PolicyDecision.Accept(
            $"run {terms.RunId} round {terms.Round}: run epsilon {F(runEpsilon)} of {F(policy.MaxEpsilonPerRun)}, lifetime {F(lifetimeEpsilon)} of {F(policy.MaxEpsilonLifetime)}");
    }

    private LocalCharge ToCharge(RoundTerms terms) =>
        new(terms.RunId, terms.Round, terms.Mechanism, terms.NoiseMultiplier, terms.SamplingRate, time.GetUtcNow(), terms.Plan);
}
