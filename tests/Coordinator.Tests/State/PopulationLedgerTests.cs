using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;
using Federated.Protos.V1;

namespace Federated.Coordinator.Tests.State;

/// <summary>The population ledger in the state: reservations, the charge re-check, releases, budget changes and each client's own epsilon.</summary>
public sealed class PopulationLedgerTests : IDisposable
{
    private const double Delta = 1e-5;

    private readonly X509Certificate2 _signer = TestSigner.Create();
    private TestStateDatabase? _database;
    private CoordinatorState _state = null!;

    private void Use(StateBackend backend)
    {
        _database = new TestStateDatabase(backend);
        _state = _database.Open(_signer);
    }

    public void Dispose()
    {
        _state?.Dispose();
        _database?.Dispose();
        _signer.Dispose();
    }

    // Central discrete Gaussian plans: at z the round RDP is 2a / z^2 (sigma^2 = B at z = 1), so rounds and z set the price.
    private static PrivacyPlan Plan(double z, long rounds) =>
        PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, 1024, 3, 2, 32, 1.0, z, rounds, 1e-6));

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void CompleteRound_ChargeBeyondWhatIsLeft_RefusedAndNothingOfTheRoundIsWritten(StateBackend backend)
    {
        Use(backend);
        PrivacyPlan reserved = Plan(4, 10);
        PrivacyPlan unreserved = Plan(4, 1);
        double budget = EpsilonOf(Sum(reserved.RdpAfter(10), unreserved.RdpAfter(1))) * 0.999;
        _state.Budgets.Set("default", budget, Delta, "officer");
        // Run A reserves ten rounds; run B (recorded before reservations existed, say) holds none.
        _state.Database.Write(work =>
        {
            _state.Runs.Create(work, "run-a", [1], "default", reserved.Epsilon.Epsilon, 4, "a0", "engineer");
            _state.Budgets.Reserve(work, "run-a", "default", reserved);
        });
        _state.Runs.Create("run-b", [2], "default", unreserved.Epsilon.Epsilon, 4, "b0", "engineer");
        _state.Rounds.Start("run-b", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "b0");
        int audit = _state.Audit.Read(1, 1000).Entries.Count;

        var refused = Assert.Throws<BudgetRefusedException>(() => _state.Rounds.Complete(Completion("run-b", 1, unreserved)));

        Assert.StartsWith("round 1 of run 'run-b' would overspend population 'default'", refused.Message, StringComparison.Ordinal);
        Assert.Empty(_state.Ledger.List("run-b", null));
        Assert.Equal(RoundStage.Manifest, _state.Rounds.Stage("run-b", 1));
        Assert.False(_state.AdapterRecords.IsRecorded("b1"));
        Assert.All(_state.Rounds.Participants("run-b", 1).Values, s => Assert.Equal(ParticipantStatus.Selected, s));
        Assert.Equal(audit, _state.Audit.Read(1, 1000).Entries.Count);
        Assert.Empty(_state.Clients.Privacy());

        // The reserved run's own rounds are covered by its reservation and go through.
        _state.Rounds.Start("run-a", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        LedgerRecord charged = _state.Rounds.Complete(Completion("run-a", 1, reserved));
        Assert.Equal(reserved.EpsilonAfter(1).Epsilon, charged.EpsilonAfter, 12);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void RunEnd_AbortedWithRoundsUnspent_ReleasesWhatItDidNotSpend(StateBackend backend)
    {
        Use(backend);
        PrivacyPlan plan = Plan(4, 5);
        StartedWithOneRound(plan);
        BudgetRecord running = _state.Budgets.Get("default")!;

        _state.Runs.End("run-a", RunState.Aborted, "aborted by engineer", "engineer");

        BudgetRecord ended = _state.Budgets.Get("default")!;
        // While running: one round spent, four reserved, all at the budget's delta.
        Assert.Equal(EpsilonOf(plan.RdpAfter(1)), running.EpsilonSpent, 12);
        Assert.Equal(EpsilonOf(plan.RdpAfter(5)) - EpsilonOf(plan.RdpAfter(1)), running.EpsilonReserved, 9);
        Assert.Equal(50 - EpsilonOf(plan.RdpAfter(5)), running.EpsilonRemaining, 9);
        // After: the spent round stays, the four unreleased rounds are free again.
        Assert.Equal(running.EpsilonSpent, ended.EpsilonSpent, 12);
        Assert.Equal(0, ended.EpsilonReserved);
        Assert.Equal(50 - ended.EpsilonSpent, ended.EpsilonRemaining, 9);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Reserve_MoreThanLeft_RefusedNamingTheNumbersAndNothingWritten(StateBackend backend)
    {
        Use(backend);
        PrivacyPlan plan = Plan(2, 20);
        _state.Budgets.Set("default", EpsilonOf(plan.RdpAfter(20)) * 1.2, Delta, "officer");
        _state.Database.Write(work =>
        {
            _state.Runs.Create(work, "run-a", [1], "default", plan.Epsilon.Epsilon, 2, "a0", "engineer");
            _state.Budgets.Reserve(work, "run-a", "default", plan);
        });

        var refused = Assert.Throws<BudgetRefusedException>(() => _state.Database.Write(work =>
        {
            _state.Runs.Create(work, "run-b", [2], "default", plan.Epsilon.Epsilon, 2, "b0", "engineer");
            return _state.Budgets.Reserve(work, "run-b", "default", plan);
        }));

        Assert.Contains($"(spent 0, reserved {EpsilonOf(plan.RdpAfter(20)):G6})", refused.Message, StringComparison.Ordinal);
        Assert.Contains($"with this run it would commit {EpsilonOf(plan.RdpAfter(40)):G6}", refused.Message, StringComparison.Ordinal);
        Assert.Null(_state.Runs.Get("run-b"));
        Assert.Equal(EpsilonOf(plan.RdpAfter(20)), _state.Budgets.Get("default")!.EpsilonReserved, 9);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void BudgetSet_BelowSpentAndReserved_RefusedNamingBothAndNothingWritten(StateBackend backend)
    {
        Use(backend);
        PrivacyPlan plan = Plan(4, 5);
        StartedWithOneRound(plan);
        BudgetRecord before = _state.Budgets.Get("default")!;
        int audit = _state.Audit.Read(1, 1000).Entries.Count;

        var refused = Assert.Throws<BudgetRefusedException>(() => _state.Budgets.Set("default", before.EpsilonSpent + before.EpsilonReserved / 2, Delta, "officer"));

        Assert.Contains($"already spent ({before.EpsilonSpent:G6}) and reserved ({before.EpsilonReserved:G6})", refused.Message, StringComparison.Ordinal);
        Assert.Equal(before, _state.Budgets.Get("default"));
        Assert.Equal(audit, _state.Audit.Read(1, 1000).Entries.Count);
        // Exactly what is committed is accepted.
        Assert.Equal(before.EpsilonSpent + before.EpsilonReserved, _state.Budgets.Set("default", (before.EpsilonSpent + before.EpsilonReserved) * (1 + 1e-9), Delta, "officer").Epsilon, 6);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void ClientsPrivacy_RoundsContributedTo_ComposedPerOrderAtTheBudgetsDelta(StateBackend backend)
    {
        Use(backend);
        PrivacyPlan plan = Plan(4, 3);
        _state.Budgets.Set("default", 50, Delta, "officer");
        foreach (string client in new[] { "alice", "bob", "carol" })
        {
            _state.Clients.Register(client, new string('a', 64), "1", "cpu");
        }
        _state.Database.Write(work =>
        {
            _state.Runs.Create(work, "run-a", [1], "default", plan.Epsilon.Epsilon, 4, "a0", "engineer");
            _state.Budgets.Reserve(work, "run-a", "default", plan);
        });
        _state.Rounds.Start("run-a", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        _state.Rounds.Complete(Completion("run-a", 1, plan, ("alice", ParticipantStatus.Uploaded), ("bob", ParticipantStatus.Uploaded)));
        _state.Rounds.Start("run-a", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a1");
        _state.Rounds.Complete(Completion("run-a", 2, plan, ("alice", ParticipantStatus.Uploaded), ("bob", ParticipantStatus.Dropped)));

        IReadOnlyDictionary<string, ClientPrivacy> privacy = _state.Clients.Privacy();

        Assert.Equal((Delta, 2), (privacy["alice"].Delta, privacy["alice"].Rounds));
        Assert.Equal(EpsilonOf(plan.RdpAfter(2)), privacy["alice"].Epsilon, 12);
        Assert.Equal((EpsilonOf(plan.RdpAfter(1)), 1), (privacy["bob"].Epsilon, privacy["bob"].Rounds));
        Assert.False(privacy.ContainsKey("carol"));
        Dictionary<string, string?> populations = _state.Clients.List().ToDictionary(c => c.ClientId, c => c.Population);
        Assert.Equal(("default", "default", null), (populations["alice"], populations["bob"], populations["carol"]));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void CompleteRound_ContributorOfAnotherPopulation_RefusedAndRolledBack(StateBackend backend)
    {
        Use(backend);
        PrivacyPlan plan = Plan(4, 3);
        _state.Budgets.Set("default", 50, Delta, "officer");
        _state.Budgets.Set("other", 50, Delta, "officer");
        _state.Clients.Register("alice", new string('a', 64), "1", "cpu");
        _state.Runs.Create("run-a", [1], "default", plan.Epsilon.Epsilon, 4, "a0", "engineer");
        _state.Runs.Create("run-o", [1], "other", plan.Epsilon.Epsilon, 4, "o0", "engineer");
        _state.Rounds.Start("run-a", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        _state.Rounds.Complete(Completion("run-a", 1, plan, ("alice", ParticipantStatus.Uploaded)));
        _state.Rounds.Start("run-o", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "o0");

        var refused = Assert.Throws<BudgetRefusedException>(() => _state.Rounds.Complete(
            Completion("run-o", 1, plan, ("alice", ParticipantStatus.Uploaded)) with { Charge = Charge("run-o", 1, plan) with { Population = "other" } }));

        Assert.Contains("client 'alice' belongs to population 'default'", refused.Message, StringComparison.Ordinal);
        Assert.Empty(_state.Ledger.List("run-o", null));
        Assert.Equal(0, _state.Budgets.Get("other")!.EpsilonSpent);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Open_StateWithChargesFromBeforePerOrderAccounting_PopulationSpentInFullAndClosed(StateBackend backend)
    {
        // A database at schema version 1, as a coordinator of that version left it, migrated by this one's Open.
        _database = new TestStateDatabase(backend);
        _database.Execute(backend == StateBackend.Sqlite
            ? StateSchema.Migrations[0] + "PRAGMA user_version = 1;"
            : StateSchema.PostgresMigrations[0] + "CREATE TABLE state_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL); INSERT INTO state_schema VALUES (1, 1);");
        _database.Execute("""
            INSERT INTO budgets VALUES ('default', 10, 1e-5, 'officer', '2026-01-01T00:00:00.0000000Z');
            INSERT INTO ledger (run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at)
            VALUES ('old', 1, 'default', 2.5, 2.5, 1e-6, 1, 1.0, 1.0, 3, '2026-01-01T00:00:00.0000000Z');
            """);

        using CoordinatorState legacy = _database.Open(_signer);

        BudgetRecord budget = legacy.Budgets.Get("default")!;
        Assert.Equal((double.PositiveInfinity, 0.0, 0.0), (budget.EpsilonSpent, budget.EpsilonReserved, budget.EpsilonRemaining));
        var refused = Assert.Throws<BudgetRefusedException>(() => legacy.Budgets.RequireAffordable("default", Plan(100, 1)));
        Assert.Contains("holds 1 charge(s) recorded before per-order RDP accounting", refused.Message, StringComparison.Ordinal);
        Assert.Null(legacy.Ledger.List("old", null).Single().Adjacency);
    }

    // Budget 50 at Delta; run-a reserves the plan and releases round 1.
    private void StartedWithOneRound(PrivacyPlan plan)
    {
        _state.Budgets.Set("default", 50, Delta, "officer");
        _state.Database.Write(work =>
        {
            _state.Runs.Create(work, "run-a", [1], "default", plan.Epsilon.Epsilon, 4, "a0", "engineer");
            _state.Budgets.Reserve(work, "run-a", "default", plan);
        });
        _state.Rounds.Start("run-a", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        _state.Rounds.Complete(Completion("run-a", 1, plan));
    }

    private static double EpsilonOf(double[] rdp) => RdpAnalysis.Epsilon(RdpOrders.Default, rdp, Delta).Epsilon;

    private static double[] Sum(double[] a, double[] b) => [.. a.Select((v, i) => v + b[i])];

    private static LedgerRecord Charge(string runId, int round, PrivacyPlan plan) =>
        new(0, runId, round, "default", plan.EpsilonAfter(round).Epsilon, 0, 1e-6, (int)NoiseMechanism.CentralGaussian, plan.Parameters.NoiseMultiplier, 1.0, 2, default,
            new RdpCharge(plan.Orders, plan.RoundRdp), plan.AdjacencyName);

    private static RoundCompletion Completion(string runId, int round, PrivacyPlan plan, params (string Client, ParticipantStatus Status)[] statuses) =>
        new(Charge(runId, round, plan), new StoredAdapter(runId[^1] + round.ToString(System.Globalization.CultureInfo.InvariantCulture), 10, [7]),
            statuses.ToDictionary(s => s.Client, s => s.Status));
}
