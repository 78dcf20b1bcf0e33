using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.State;
using Federated.Coordinator.Tests.State;
using Microsoft.Data.Sqlite;

namespace Federated.Coordinator.Tests;

public sealed class CoordinatorStateTests
{
    [Fact]
    public void Open_NewFile_AppliesEveryMigrationInWalMode()
    {
        using var db = new TestStateDatabase(StateBackend.Sqlite);
        using X509Certificate2 signer = TestSigner.Create();

        using (CoordinatorState state = db.Open(signer))
        {
            Assert.Equal(StateSchema.Migrations.Length, state.SchemaVersion);
        }
        using SqliteConnection connection = SqliteStateDatabase.OpenReadOnly(db.Location.Path!);
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", command.ExecuteScalar());
    }

    [Fact]
    public void Open_NewPostgresDatabase_AppliesEveryMigrationAndWritesWithSynchronousCommit()
    {
        using var db = new TestStateDatabase(StateBackend.Postgres);
        using X509Certificate2 signer = TestSigner.Create();
        // A server whose default is off: the coordinator must turn it on for its own writes.
        db.Execute($"ALTER DATABASE {new Npgsql.NpgsqlConnectionStringBuilder(db.Argument).Database} SET synchronous_commit = off");

        using CoordinatorState state = db.Open(signer);
        string setting = state.Database.Write(work => work.Scalar<string>("SHOW synchronous_commit"))!;
        string readSetting = state.Database.Read(session => session.Scalar<string>("SHOW synchronous_commit"))!;

        Assert.Equal(StateSchema.PostgresMigrations.Length, state.SchemaVersion);
        Assert.Equal(StateSchema.PostgresMigrations.Length, db.Scalar<int>("SELECT version FROM state_schema WHERE id = 1"));
        Assert.Equal(1, db.Scalar<int>("SELECT COUNT(*) FROM state_schema"));
        Assert.Equal("on", setting);
        Assert.Equal("off", readSetting);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Open_SchemaFromTheFuture_Throws(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        db.Open(signer).Dispose();
        int future = StateSchema.Migrations.Length + 1;
        db.Execute(backend == StateBackend.Sqlite ? $"PRAGMA user_version = {future}" : $"UPDATE state_schema SET version = {future}");

        var ex = Assert.Throws<InvalidOperationException>(() => db.Open(signer));
        Assert.Contains("newer", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Open_TwoCoordinatorsAtOnceOnOneNewDatabase_MigratedOnce()
    {
        using var db = new TestStateDatabase(StateBackend.Postgres);
        using X509Certificate2 signer = TestSigner.Create();

        CoordinatorState[] states = [.. Enumerable.Range(0, 4).AsParallel().Select(_ => db.Open(signer))];
        try
        {
            Assert.All(states, s => Assert.Equal(StateSchema.PostgresMigrations.Length, s.SchemaVersion));
            Assert.Equal(1, db.Scalar<int>("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'ledger'"));
        }
        finally
        {
            foreach (CoordinatorState state in states)
            {
                state.Dispose();
            }
        }
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void RegisterClient_ThenReopen_ClientAndAuditEntryPersist(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using (CoordinatorState state = db.Open(signer))
        {
            state.Clients.Register("alice", "aa", "1.0", "cpu");
            state.Clients.Register("alice", "aa", "1.1", "cpu"); // same certificate: no new audit entry
            Assert.True(state.Clients.Heartbeat("alice", available: false));
            Assert.False(state.Clients.Heartbeat("nobody", available: true));
        }

        using CoordinatorState reopened = db.Open(signer);
        ClientRecord alice = Assert.Single(reopened.Clients.List());
        Assert.Equal(("alice", "1.1", false), (alice.ClientId, alice.ClientVersion, alice.Available));
        var (entries, head) = reopened.Audit.Read(1, 100);
        Assert.Single(entries);
        Assert.Contains("\"action\":\"client.register\"", entries[0].CanonicalJson, StringComparison.Ordinal);
        Assert.Equal(1, head!.Sequence);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Charge_SameRoundTwice_SecondChargeFailsAndSpentCountsOnce(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        state.Budgets.Set("default", 8.0, 1e-6, "officer");
        var charge = new LedgerRecord(0, "run1", 1, "default", 0.75, 0.75, 1e-6, 1, 1.1, 1.0, 3, default) { Rdp = TestCharges.Rdp() };

        LedgerRecord stored = state.Database.Write(work => state.Ledger.Charge(work, charge));
        Assert.Throws(db.RefusalException, () => state.Database.Write(work => state.Ledger.Charge(work, charge)));
        state.Database.Write(work => state.Ledger.Charge(work, charge with { Round = 2, EpsilonAfter = 1.1, EpsilonDelta = 0.35 }));

        Assert.Equal(1, stored.Sequence);
        BudgetRecord budget = state.Budgets.Get("default")!;
        // Two rounds composed per RDP order at the budget's delta, not the rows' epsilons added.
        Assert.Equal(TestCharges.Epsilon(2, 1e-6), budget.EpsilonSpent, 12);
        Assert.Equal(2, state.Ledger.List("run1", null).Count);
        Assert.Empty(state.Ledger.List("run2", null));
    }

    public static TheoryData<StateBackend, double, double> OutOfRangeBudgets()
    {
        var data = new TheoryData<StateBackend, double, double>();
        foreach (StateBackend backend in new[] { StateBackend.Sqlite, StateBackend.Postgres })
        {
            foreach ((double epsilon, double delta) in new[] { (0.0, 1e-6), (double.NaN, 1e-6), (1.0, 1.0), (1.0, 0.0) })
            {
                data.Add(backend, epsilon, delta);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(OutOfRangeBudgets))]
    public void SetBudget_OutOfRange_ThrowsAndWritesNothing(StateBackend backend, double epsilon, double delta)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);

        Assert.Throws<ArgumentOutOfRangeException>(() => state.Budgets.Set("default", epsilon, delta, "officer"));

        Assert.Null(state.Budgets.Get("default"));
        Assert.Empty(state.Audit.Read(1, 10).Entries);
    }
}

public sealed class CoordinatorStateRoundTests
{
    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void CompleteRound_Twice_SecondRefusedAndLedgerChargedOnce(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        state.Budgets.Set("default", 100, 1e-5, "officer");
        state.Runs.Create("run1", [1, 2, 3], "default", 2.0, 1.1, "a0", "engineer");
        state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2, ["carol"] = 3 }, "a0");
        var charge = new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 3, default) { Rdp = TestCharges.Rdp() };

        LedgerRecord stored = state.Rounds.Complete(Completion(charge, "a1", ("alice", ParticipantStatus.Uploaded)));
        var second = Assert.Throws<InvalidOperationException>(() => state.Rounds.Complete(Completion(charge with { EpsilonAfter = 9 }, "a2")));

        Assert.Contains("not in progress", second.Message, StringComparison.Ordinal);
        Assert.Equal(1, stored.Sequence);
        Assert.Equal(0.5, Assert.Single(state.Ledger.List("run1", null)).EpsilonAfter);
        Assert.Equal(Federated.Protos.V1.RoundStage.Completed, state.Rounds.Stage("run1", 1));
        string[] actions = [.. state.Audit.Read(1, 100).Entries.Select(e => System.Text.Json.JsonDocument.Parse(e.CanonicalJson).RootElement.GetProperty("action").GetString()!)];
        // The new adapter's record is part of the completing transaction, so its entry comes just before round.complete.
        Assert.Equal(["budget.set", "run.start", "round.start", "adapter.store", "round.complete"], actions);
        Assert.Equal(ParticipantStatus.Uploaded, state.Rounds.Participants("run1", 1)["alice"]);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void FailRound_InProgress_NoChargeAndCannotCompleteLater(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        state.Budgets.Set("default", 100, 1e-5, "officer");
        state.Runs.Create("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
        state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");

        state.Rounds.Fail("run1", 1, "2 survivors, threshold 3");

        Assert.Throws<InvalidOperationException>(() => state.Rounds.Complete(Completion(new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 2, default) { Rdp = TestCharges.Rdp() }, "a1")));
        Assert.False(state.AdapterRecords.IsRecorded("a1"));
        Assert.Empty(state.Ledger.List("run1", null));
        Assert.Equal(Federated.Protos.V1.RoundStage.Failed, state.Rounds.Stage("run1", 1));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void RecordDecline_SelectedClient_RowStaysDeclinedAndTheAuditNamesTheRule(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        state.Budgets.Set("default", 100, 1e-5, "officer");
        state.Runs.Create("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
        state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2, ["carol"] = 3 }, "a0");

        bool recorded = state.Rounds.RecordDecline("run1", 1, "carol", "Budget", "max_epsilon_per_run", "max_epsilon_per_run: run would reach 4.7");
        state.Rounds.Complete(Completion(new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 2, default) { Rdp = TestCharges.Rdp() }, "a1",
            ("carol", ParticipantStatus.Dropped), ("alice", ParticipantStatus.Uploaded)));

        Assert.True(recorded);
        Assert.Equal(ParticipantStatus.Declined, state.Rounds.Participants("run1", 1)["carol"]);
        Assert.Equal(ParticipantStatus.Uploaded, state.Rounds.Participants("run1", 1)["alice"]);
        using System.Text.Json.JsonDocument last = System.Text.Json.JsonDocument.Parse(
            state.Audit.Read(1, 100).Entries.Single(e => e.CanonicalJson.Contains("\"round.decline\"", StringComparison.Ordinal)).CanonicalJson);
        Assert.Equal("round.decline", last.RootElement.GetProperty("action").GetString());
        Assert.Equal("carol", last.RootElement.GetProperty("actor").GetString());
        Assert.Equal("max_epsilon_per_run", last.RootElement.GetProperty("details").GetProperty("rule").GetString());
        Assert.False(state.Rounds.RecordDecline("run1", 1, "mallory", "Policy", "", "not selected"));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void RecordDecline_BeforeTheRoundIsRecorded_StartRoundWritesTheParticipantDeclined(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        state.Budgets.Set("default", 100, 1e-5, "officer");
        state.Runs.Create("run1", [1], "default", 2.0, 1.1, "a0", "engineer");

        bool recorded = state.Rounds.RecordDecline("run1", 1, "bob", "Policy", "max_rank", "max_rank: rank 64 is outside 1..16");
        state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        IReadOnlyDictionary<string, ParticipantStatus> atStart = state.Rounds.Participants("run1", 1);
        state.Rounds.Complete(Completion(new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 2, default) { Rdp = TestCharges.Rdp() }, "a1", ("bob", ParticipantStatus.Dropped)));

        Assert.False(recorded);
        Assert.Equal(ParticipantStatus.Declined, atStart["bob"]);
        Assert.Equal(ParticipantStatus.Selected, atStart["alice"]);
        Assert.Equal(ParticipantStatus.Declined, state.Rounds.Participants("run1", 1)["bob"]);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void GetAdapter_RoundAdapterBeforeItsRoundCompletes_HiddenUntilTheCompletingTransaction(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = db.Open(signer);
        string initial = new('0', 64), after = new('1', 64), failed = new('2', 64);
        state.Budgets.Set("default", 100, 1e-5, "officer");
        state.AdapterRecords.Record(new StoredAdapter(initial, 10, [1]), "run1", 0, "coordinator");
        state.Runs.Create("run1", [1], "default", 2.0, 1.1, initial, "engineer");
        state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, initial);
        state.AdapterRecords.Record(new StoredAdapter(after, 10, [2]), "run1", 1, "coordinator");
        state.Rounds.Start("run1", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, initial);
        state.AdapterRecords.Record(new StoredAdapter(failed, 10, [3]), "run1", 2, "coordinator");

        // Stored but not yet released (a crash here must never let a client fetch it).
        Assert.NotNull(state.AdapterRecords.Get(initial));
        Assert.Null(state.AdapterRecords.Get(after));
        state.Rounds.Complete(Completion(new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 2, default) { Rdp = TestCharges.Rdp() }, after));
        state.Rounds.Fail("run1", 2, "1 survivor, threshold 2");

        Assert.Equal(10, state.AdapterRecords.Get(after)!.Value.SizeBytes);
        Assert.Null(state.AdapterRecords.Get(failed));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void FailInterruptedRounds_AfterReopen_RoundInProgressFailedOnceAndProgressFromLedger(StateBackend backend)
    {
        using var db = new TestStateDatabase(backend);
        using X509Certificate2 signer = TestSigner.Create();
        using (CoordinatorState state = db.Open(signer))
        {
            state.Budgets.Set("default", 100, 1e-5, "officer");
            state.Runs.Create("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
            state.Runs.Create("run2", [2], "default", 2.0, 1.1, "b0", "engineer");
            state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
            state.Rounds.Complete(Completion(new LedgerRecord(0, "run1", 1, "default", 0.7, 0.7, 1e-6, 1, 1.1, 1.0, 2, default) { Rdp = TestCharges.Rdp() }, "a1"));
            state.Rounds.Start("run1", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a1");
            state.Runs.End("run2", Federated.Protos.V1.RunState.Aborted, "stopped", "engineer");
            // The process dies here: round 2 of run1 is neither completed nor failed.
        }

        using CoordinatorState reopened = db.Open(signer);
        RunRecord unfinished = Assert.Single(reopened.Runs.ListUnfinished());
        IReadOnlyList<int> failed = reopened.Rounds.FailInterrupted("run1", "the coordinator stopped");
        IReadOnlyList<int> again = reopened.Rounds.FailInterrupted("run1", "the coordinator stopped");

        Assert.Equal(("run1", Federated.Protos.V1.RunState.Running, "a1"), (unfinished.RunId, unfinished.State, unfinished.AdapterSha256));
        Assert.Equal([1], unfinished.Plan);
        Assert.Equal([2], failed);
        Assert.Empty(again);
        Assert.Equal(Federated.Protos.V1.RoundStage.Failed, reopened.Rounds.Stage("run1", 2));
        Assert.Equal(new RunProgress(2, 1, 0.7), reopened.Runs.Progress("run1"));
        Assert.Equal(new RunProgress(0, 0, 0), reopened.Runs.Progress("run2"));
        Assert.Equal(Federated.Protos.V1.RunState.Aborted, reopened.Runs.Get("run2")!.State);
        Assert.Null(reopened.Runs.Get("run3"));
    }

    private static RoundCompletion Completion(LedgerRecord charge, string adapterAfter, params (string Client, ParticipantStatus Status)[] statuses) =>
        new(charge, new StoredAdapter(adapterAfter, 10, [7]), statuses.ToDictionary(s => s.Client, s => s.Status));
}
