using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EdgeClient.Tests.Policy;

public sealed class LocalPolicyGateTests : IDisposable
{
    private const string Pin = "5f1c3a0e9b7d2c4f6a8e0b1d3c5e7f9a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";

    private readonly string _dir = Directory.CreateTempSubdirectory("edge-policy-").FullName;
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero));

    private static readonly LocalPolicy s_policy = new()
    {
        Delta = 1e-5,
        MaxEpsilonPerRun = 3,
        MaxEpsilonLifetime = 5,
        MinNoiseMultiplier = 0.8,
        AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam],
        AllowedTargetModules = ["q_proj", "v_proj"],
        MaxRank = 16,
        MaxRoundsPerDay = 100,
        CoordinatorCertificateSha256 = Pin,
    };

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // The plan a manifest fixes (ManifestPrivacy): d = 512, 5 clients, threshold 4, 32-bit ring, C = 1.
    private static PrivacyPlanParameters Plan(double z) => new(PrivacyMechanism.DistributedSkellam, 512, 5, 4, 32, 1.0, z, 1, 1e-5);

    private static RoundTerms Terms(string run = "run-1", long round = 1, double z = 10.0, double q = 1.0) =>
        new(run, round, NoiseMechanismKind.DistributedSkellam, z, q, ["q_proj", "v_proj"], 8, Pin, 5, 4, double.IsFinite(z) && z > 0 ? Plan(z) : null);

    private string LedgerPath => Path.Combine(_dir, LocalPrivacyLedger.FileName);

    [Fact]
    public void ChargeBeforeUpload_OverLocalRunBudget_DeclinesAndChargesNothing()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);

        // q = 1, z = 0.8: one round alone costs far more than epsilon 3 at delta 1e-5.
        PolicyDecision decision = gate.ChargeBeforeUpload(Terms(z: 0.8, q: 1.0));

        Assert.False(decision.Accepted);
        Assert.Equal("max_epsilon_per_run", decision.Rule);
        Assert.Empty(ledger.Charges);
    }

    [Fact]
    public void ChargeBeforeUpload_RoundsUntilTheBudget_StopsExactlyWhereTheAccountantSays()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);
        int accepted = 0;
        for (int round = 1; round <= 500; round++)
        {
            _time.Advance(TimeSpan.FromMinutes(30));
            if (!gate.ChargeBeforeUpload(Terms(round: round)).Accepted)
            {
                break;
            }
            accepted++;
        }

        // The same plan priced over the rounds (what the coordinator charges): rounds that keep epsilon <= 3 at delta 1e-5.
        int expected = 0;
        while (PrivacyPlan.Create(Plan(10.0) with { Rounds = expected + 1 }).Epsilon.Epsilon <= 3)
        {
            expected++;
        }
        Assert.InRange(expected, 1, 499);
        Assert.Equal(expected, accepted);
        Assert.True(ledger.Spent(1e-5, "run-1").Epsilon <= 3);
    }

    [Fact]
    public void Ledger_ClientRestart_KeepsChargesAndRefusesTheSameRoundAgain()
    {
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath))
        {
            var gate = new LocalPolicyGate(s_policy, ledger, _time);
            Assert.True(gate.ChargeBeforeUpload(Terms(round: 1)).Accepted);
            Assert.True(gate.ChargeBeforeUpload(Terms(round: 2)).Accepted);
        }

        using LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(LedgerPath);
        var again = new LocalPolicyGate(s_policy, reopened, _time);
        PrivacySpent before = reopened.Spent(1e-5);
        PolicyDecision repeat = again.ChargeBeforeUpload(Terms(round: 2));

        // A second upload for one charge would be a second, independently noised release of the same data.
        Assert.False(repeat.Accepted);
        Assert.Equal(LocalPolicyGate.ReplayedRoundRule, repeat.Rule);
        Assert.Equal(2, repeat.LastChargedRound);
        Assert.Equal(2, reopened.Charges.Count);
        Assert.Equal(before.Epsilon, reopened.Spent(1e-5).Epsilon);
        Assert.Equal(PrivacyPlan.Create(Plan(10.0) with { Rounds = 2 }).Epsilon.Epsilon, before.Epsilon, 12);
    }

    [Fact]
    public void Check_RoundNotAfterTheLastCharged_DeclinesAsReplayNamingTheLastRound()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);
        foreach (long round in new long[] { 1, 2, 5 })
        {
            Assert.True(gate.ChargeBeforeUpload(Terms(round: round)).Accepted);
        }

        // A restored coordinator re-running round 3 (never charged here, but below round 5) and round 5 itself.
        foreach (long replayed in new long[] { 3, 5 })
        {
            PolicyDecision decision = gate.Check(Terms(round: replayed));
            Assert.False(decision.Accepted);
            Assert.Equal(LocalPolicyGate.ReplayedRoundRule, decision.Rule);
            Assert.Equal(5, decision.LastChargedRound);
            Assert.Contains("round 5", decision.Message, StringComparison.Ordinal);
            Assert.Equal(5, gate.CheckReplay("run-1", replayed)!.LastChargedRound);
        }
        Assert.True(gate.Check(Terms(round: 6)).Accepted);
        Assert.Null(gate.CheckReplay("run-1", 6));
        // Numbering is per run: another run starts at its own round 1.
        Assert.True(gate.Check(Terms(run: "run-2", round: 1)).Accepted);
        Assert.Equal(3, ledger.Charges.Count);
    }

    [Theory]
    [InlineData(8, 4, "threshold_majority")]
    [InlineData(8, 9, "threshold_majority")]
    [InlineData(0, 0, "threshold_majority")]
    [InlineData(5, 3, "min_threshold")]
    [InlineData(5, 4, null)]
    public void Check_Threshold_MustBeAboveHalfTheParticipantsAndTheLocalMinimum(int participants, int threshold, string? rule)
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MinThreshold = 4 }, ledger, _time);

        PolicyDecision decision = gate.Check(Terms() with { Participants = participants, Threshold = threshold });

        Assert.Equal(rule, decision.Rule);
        Assert.Equal(rule is null, decision.Accepted);
    }

    [Theory]
    // n = 100, k = 46 (neighbourhoods of 47), graph t = 24, released sums of at least 67.
    [InlineData(46, 24, 67, null)]
    // t = 23 is not above half of 47, though it would be the graph's own smallest secure t without the majority rule.
    [InlineData(46, 23, 67, "threshold_majority")]
    // t = 24 of 100 would fail the complete graph's rule; it is the neighbourhood that counts.
    [InlineData(99, 24, 24, "threshold_majority")]
    // The local minimum (here 40) bounds the release threshold, not the graph's t.
    [InlineData(46, 24, 39, "min_threshold")]
    [InlineData(46, 24, 101, "min_threshold")]
    // A neighbourhood larger than the round is a malformed manifest.
    [InlineData(120, 80, 67, "threshold_majority")]
    public void Check_SparseRound_GraphThresholdOnTheNeighbourhoodAndMinimumOnTheReleaseThreshold(int neighbours, int threshold, int minSurvivors, string? rule)
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MinThreshold = 40 }, ledger, _time);

        PolicyDecision decision = gate.Check(Terms() with { Participants = 100, Threshold = threshold, Neighbours = neighbours, MinSurvivors = minSurvivors });

        Assert.Equal(rule, decision.Rule);
        Assert.Equal(rule is null, decision.Accepted);
    }

    [Fact]
    public void Check_SybilRound_WorstCaseFromTheOwnNoiseShareAloneIsCappedWhileTheDistributedEpsilonIsNot()
    {
        // t = 100 of 100 at z = 40: the t shares together give a small epsilon, one share alone (variance V/t) a large one.
        var plan = new PrivacyPlanParameters(PrivacyMechanism.DistributedSkellam, 512, 100, 100, 32, 1.0, 40, 1, 1e-5);
        RoundTerms terms = Terms(z: 40) with { Participants = 100, Threshold = 100, Plan = plan };
        PrivacyPlan priced = PrivacyPlan.Create(plan);
        double distributed = priced.Epsilon.Epsilon;
        double ownShare = RdpAnalysis.Epsilon(priced.Orders, priced.OwnShareRoundRdp()!, 1e-5).Epsilon;
        Assert.True(ownShare > 5 * distributed, $"own share {ownShare} vs distributed {distributed}");
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var capped = new LocalPolicyGate(s_policy with { MaxEpsilonPerRun = 100, MaxEpsilonLifetime = 100, MaxWorstCaseEpsilonPerRun = (ownShare + distributed) / 2 }, ledger, _time);

        PolicyDecision decision = capped.ChargeBeforeUpload(terms);

        Assert.True(distributed < (ownShare + distributed) / 2);
        Assert.False(decision.Accepted);
        Assert.Equal("max_worst_case_epsilon_per_run", decision.Rule);
        Assert.Empty(ledger.Charges);
        // Under a cap above the own-share price the round is charged, and the ledger reports both epsilons.
        var roomy = new LocalPolicyGate(s_policy with { MaxEpsilonPerRun = 100, MaxEpsilonLifetime = 100, MaxWorstCaseEpsilonPerRun = ownShare * 1.01 }, ledger, _time);
        Assert.True(roomy.ChargeBeforeUpload(terms).Accepted);
        Assert.Equal(distributed, ledger.Spent(1e-5, "run-1").Epsilon, 9);
        Assert.Equal(ownShare, ledger.WorstCaseEpsilon(1e-5, "run-1"), 9);
    }

    [Fact]
    public void Check_CentralNoiseUnderAWorstCaseCap_DeclinesAsUnbounded()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with
        {
            AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam, NoiseMechanismKind.CentralGaussian],
            MaxWorstCaseEpsilonLifetime = 1000,
        }, ledger, _time);
        RoundTerms central = Terms() with
        {
            Mechanism = NoiseMechanismKind.CentralGaussian,
            Plan = Plan(10.0) with { Mechanism = PrivacyMechanism.CentralGaussian },
        };

        PolicyDecision decision = gate.Check(central);

        Assert.Equal("max_worst_case_epsilon_lifetime", decision.Rule);
        Assert.Contains("unbounded", decision.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_RollingThirtyDayCap_DeclinesUntilOldChargesLeaveTheWindow()
    {
        double oneRound = PrivacyPlan.Create(Plan(10.0)).Epsilon.Epsilon;
        double twoRounds = PrivacyPlan.Create(Plan(10.0) with { Rounds = 2 }).Epsilon.Epsilon;
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MaxEpsilonPerRun = 5, MaxEpsilonPer30Days = (oneRound + twoRounds) / 2 }, ledger, _time);
        Assert.True(gate.ChargeBeforeUpload(Terms(round: 1)).Accepted);
        _time.Advance(TimeSpan.FromDays(20));

        Assert.Equal("max_epsilon_per_30_days", gate.Check(Terms(round: 2)).Rule);
        _time.Advance(TimeSpan.FromDays(10) + TimeSpan.FromSeconds(1));
        Assert.True(gate.ChargeBeforeUpload(Terms(run: "run-2", round: 1)).Accepted);
        Assert.Equal(oneRound, ledger.Spent(1e-5, since: _time.GetUtcNow().AddDays(-30)).Epsilon, 12);
    }

    [Fact]
    public void Check_LifetimeBudgetAcrossRuns_Declines()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);
        string? rule = null;
        for (int run = 0; run < 500 && rule is null; run++)
        {
            for (int round = 1; round <= 2; round++)
            {
                PolicyDecision decision = gate.ChargeBeforeUpload(Terms(run: $"run-{run}", round: round));
                if (!decision.Accepted)
                {
                    rule = decision.Rule;
                    break;
                }
            }
        }

        Assert.Equal("max_epsilon_lifetime", rule);
        Assert.True(ledger.Spent(1e-5).Epsilon <= 5);
    }

    [Theory]
    [InlineData("allowed_mechanisms", "central")]
    [InlineData("min_noise_multiplier", "low-noise")]
    [InlineData("min_noise_multiplier", "nan-noise")]
    [InlineData("sampling_rate", "zero-rate")]
    [InlineData("allowed_target_modules", "mlp")]
    [InlineData("max_rank", "rank-32")]
    [InlineData("coordinator_certificate_sha256", "other-coordinator")]
    public void Check_ManifestBreakingARule_DeclinesNamingTheRule(string rule, string violation)
    {
        RoundTerms terms = violation switch
        {
            "central" => Terms() with { Mechanism = NoiseMechanismKind.CentralGaussian },
            "low-noise" => Terms(z: 0.5),
            "nan-noise" => Terms(z: double.NaN),
            "zero-rate" => Terms(q: 0),
            "mlp" => Terms() with { TargetModules = ["q_proj", "down_proj"] },
            "rank-32" => Terms() with { Rank = 32 },
            _ => Terms() with { CoordinatorCertificateSha256 = new string('0', 64) },
        };
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);

        PolicyDecision decision = gate.ChargeBeforeUpload(terms);

        Assert.False(decision.Accepted);
        Assert.Equal(rule, decision.Rule);
        Assert.Empty(ledger.Charges);
    }

    [Fact]
    public void Check_MaxRoundsPerDay_DeclinesUntilTheWindowMoves()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MaxRoundsPerDay = 2, MaxEpsilonPerRun = 5 }, ledger, _time);
        Assert.True(gate.ChargeBeforeUpload(Terms(round: 1)).Accepted);
        Assert.True(gate.ChargeBeforeUpload(Terms(round: 2)).Accepted);

        Assert.Equal("max_rounds_per_day", gate.Check(Terms(round: 3)).Rule);
        _time.Advance(TimeSpan.FromHours(24));
        Assert.True(gate.Check(Terms(round: 3)).Accepted);
    }
}
