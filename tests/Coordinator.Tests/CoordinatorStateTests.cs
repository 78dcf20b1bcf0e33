using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.State;
using Microsoft.Data.Sqlite;

namespace Federated.Coordinator.Tests;

public sealed class CoordinatorStateTests
{
    [Fact]
    public void Open_NewFile_AppliesEveryMigrationInWalMode()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        string path = dir.File("state.db");

        using (CoordinatorState state = CoordinatorState.Open(path, signer, TimeProvider.System))
        {
            Assert.Equal(StateSchema.Migrations.Length, state.SchemaVersion);
        }
        using SqliteConnection connection = CoordinatorState.OpenReadOnly(path);
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        Assert.Equal("wal", command.ExecuteScalar());
    }

    [Fact]
    public void Open_SchemaFromTheFuture_Throws()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        string path = dir.File("state.db");
        CoordinatorState.Open(path, signer, TimeProvider.System).Dispose();
        using (var connection = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            connection.Open();
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = $"PRAGMA user_version = {StateSchema.Migrations.Length + 1}";
            command.ExecuteNonQuery();
        }

        var ex = Assert.Throws<InvalidOperationException>(() => CoordinatorState.Open(path, signer, TimeProvider.System));
        Assert.Contains("newer", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RegisterClient_ThenReopen_ClientAndAuditEntryPersist()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        string path = dir.File("state.db");
        using (CoordinatorState state = CoordinatorState.Open(path, signer, TimeProvider.System))
        {
            state.RegisterClient("alice", "aa", "1.0", "cpu");
            state.RegisterClient("alice", "aa", "1.1", "cpu"); // same certificate: no new audit entry
            Assert.True(state.Heartbeat("alice", available: false));
            Assert.False(state.Heartbeat("nobody", available: true));
        }

        using CoordinatorState reopened = CoordinatorState.Open(path, signer, TimeProvider.System);
        ClientRecord alice = Assert.Single(reopened.ListClients());
        Assert.Equal(("alice", "1.1", false), (alice.ClientId, alice.ClientVersion, alice.Available));
        var (entries, head) = reopened.ReadAudit(1, 100);
        Assert.Single(entries);
        Assert.Contains("\"action\":\"client.register\"", entries[0].CanonicalJson, StringComparison.Ordinal);
        Assert.Equal(1, head!.Sequence);
    }

    [Fact]
    public void ChargeLedger_SameRoundTwice_SecondChargeFailsAndSpentCountsOnce()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);
        state.SetBudget("default", 8.0, 1e-6, "officer");
        var charge = new LedgerRecord(0, "run1", 1, "default", 0.75, 0.75, 1e-6, 1, 1.1, 1.0, 3, default);

        LedgerRecord stored = state.ChargeLedger(charge, "coordinator");
        Assert.Throws<SqliteException>(() => state.ChargeLedger(charge, "coordinator"));
        state.ChargeLedger(charge with { Round = 2, EpsilonAfter = 1.1, EpsilonDelta = 0.35 }, "coordinator");

        Assert.Equal(1, stored.Sequence);
        BudgetRecord budget = state.GetBudget("default")!;
        Assert.Equal(1.1, budget.EpsilonSpent, 12);
        Assert.Equal(2, state.GetLedger("run1", null).Count);
        Assert.Empty(state.GetLedger("run2", null));
    }

    [Theory]
    [InlineData(0.0, 1e-6)]
    [InlineData(double.NaN, 1e-6)]
    [InlineData(1.0, 1.0)]
    [InlineData(1.0, 0.0)]
    public void SetBudget_OutOfRange_ThrowsAndWritesNothing(double epsilon, double delta)
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);

        Assert.Throws<ArgumentOutOfRangeException>(() => state.SetBudget("default", epsilon, delta, "officer"));

        Assert.Null(state.GetBudget("default"));
        Assert.Empty(state.ReadAudit(1, 10).Entries);
    }
}

public sealed class CoordinatorStateRoundTests
{
    [Fact]
    public void CompleteRound_Twice_SecondRefusedAndLedgerChargedOnce()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);
        state.CreateRun("run1", [1, 2, 3], "default", 2.0, 1.1, "a0", "engineer");
        state.StartRound("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2, ["carol"] = 3 }, "a0");
        state.SetParticipantStatus("run1", 1, "alice", "uploaded");
        var charge = new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 3, default);

        LedgerRecord stored = state.CompleteRound(charge, "a1");
        var second = Assert.Throws<InvalidOperationException>(() => state.CompleteRound(charge with { EpsilonAfter = 9 }, "a2"));

        Assert.Contains("not in progress", second.Message, StringComparison.Ordinal);
        Assert.Equal(1, stored.Sequence);
        Assert.Equal(0.5, Assert.Single(state.GetLedger("run1", null)).EpsilonAfter);
        Assert.Equal(Federated.Protos.V1.RoundStage.Completed, state.GetRoundStage("run1", 1));
        string[] actions = [.. state.ReadAudit(1, 100).Entries.Select(e => System.Text.Json.JsonDocument.Parse(e.CanonicalJson).RootElement.GetProperty("action").GetString()!)];
        Assert.Equal(["run.start", "round.start", "round.complete"], actions);
    }

    [Fact]
    public void FailRound_InProgress_NoChargeAndCannotCompleteLater()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);
        state.CreateRun("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
        state.StartRound("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");

        state.FailRound("run1", 1, "2 survivors, threshold 3");

        Assert.Throws<InvalidOperationException>(() => state.CompleteRound(new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 2, default), "a1"));
        Assert.Empty(state.GetLedger("run1", null));
        Assert.Equal(Federated.Protos.V1.RoundStage.Failed, state.GetRoundStage("run1", 1));
    }

    [Fact]
    public void RecordDecline_SelectedClient_RowStaysDeclinedAndTheAuditNamesTheRule()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);
        state.CreateRun("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
        state.StartRound("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2, ["carol"] = 3 }, "a0");

        bool recorded = state.RecordDecline("run1", 1, "carol", "Budget", "max_epsilon_per_run", "max_epsilon_per_run: run would reach 4.7");
        state.SetParticipantStatus("run1", 1, "carol", "dropped");
        state.SetParticipantStatus("run1", 1, "alice", "uploaded");

        Assert.True(recorded);
        Assert.Equal("declined", state.GetParticipants("run1", 1)["carol"]);
        Assert.Equal("uploaded", state.GetParticipants("run1", 1)["alice"]);
        using System.Text.Json.JsonDocument last = System.Text.Json.JsonDocument.Parse(state.ReadAudit(1, 100).Entries[^1].CanonicalJson);
        Assert.Equal("round.decline", last.RootElement.GetProperty("action").GetString());
        Assert.Equal("carol", last.RootElement.GetProperty("actor").GetString());
        Assert.Equal("max_epsilon_per_run", last.RootElement.GetProperty("details").GetProperty("rule").GetString());
        Assert.False(state.RecordDecline("run1", 1, "mallory", "Policy", "", "not selected"));
    }

    [Fact]
    public void RecordDecline_BeforeTheRoundIsRecorded_StartRoundWritesTheParticipantDeclined()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);
        state.CreateRun("run1", [1], "default", 2.0, 1.1, "a0", "engineer");

        bool recorded = state.RecordDecline("run1", 1, "bob", "Policy", "max_rank", "max_rank: rank 64 is outside 1..16");
        state.StartRound("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        state.SetParticipantStatus("run1", 1, "bob", "dropped");

        Assert.False(recorded);
        Assert.Equal("declined", state.GetParticipants("run1", 1)["bob"]);
        Assert.Equal("selected", state.GetParticipants("run1", 1)["alice"]);
    }

    [Fact]
    public void GetAdapter_RoundAdapterBeforeItsRoundCompletes_HiddenUntilTheCompletingTransaction()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        using CoordinatorState state = CoordinatorState.Open(dir.File("state.db"), signer, TimeProvider.System);
        string initial = new('0', 64), after = new('1', 64), failed = new('2', 64);
        state.RecordAdapter(initial, "run1", 0, 10, [1], "coordinator");
        state.CreateRun("run1", [1], "default", 2.0, 1.1, initial, "engineer");
        state.StartRound("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, initial);
        state.RecordAdapter(after, "run1", 1, 10, [2], "coordinator");
        state.StartRound("run1", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, initial);
        state.RecordAdapter(failed, "run1", 2, 10, [3], "coordinator");

        // Stored but not yet released (a crash here must never let a client fetch it).
        Assert.NotNull(state.GetAdapter(initial));
        Assert.Null(state.GetAdapter(after));
        state.CompleteRound(new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 2, default), after);
        state.FailRound("run1", 2, "1 survivor, threshold 2");

        Assert.Equal(10, state.GetAdapter(after)!.Value.SizeBytes);
        Assert.Null(state.GetAdapter(failed));
    }

    [Fact]
    public void FailInterruptedRounds_AfterReopen_RoundInProgressFailedOnceAndProgressFromLedger()
    {
        using var dir = new TempDirectory();
        using X509Certificate2 signer = TestSigner.Create();
        string path = dir.File("state.db");
        using (CoordinatorState state = CoordinatorState.Open(path, signer, TimeProvider.System))
        {
            state.CreateRun("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
            state.CreateRun("run2", [2], "default", 2.0, 1.1, "b0", "engineer");
            state.StartRound("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
            state.CompleteRound(new LedgerRecord(0, "run1", 1, "default", 0.7, 0.7, 1e-6, 1, 1.1, 1.0, 2, default), "a1");
            state.StartRound("run1", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a1");
            state.EndRun("run2", Federated.Protos.V1.RunState.Aborted, "stopped", "engineer");
            // The process dies here: round 2 of run1 is neither completed nor failed.
        }

        using CoordinatorState reopened = CoordinatorState.Open(path, signer, TimeProvider.System);
        RunRecord unfinished = Assert.Single(reopened.ListUnfinishedRuns());
        IReadOnlyList<int> failed = reopened.FailInterruptedRounds("run1", "the coordinator stopped");
        IReadOnlyList<int> again = reopened.FailInterruptedRounds("run1", "the coordinator stopped");

        Assert.Equal(("run1", Federated.Protos.V1.RunState.Running, "a1"), (unfinished.RunId, unfinished.State, unfinished.AdapterSha256));
        Assert.Equal([1], unfinished.Plan);
        Assert.Equal([2], failed);
        Assert.Empty(again);
        Assert.Equal(Federated.Protos.V1.RoundStage.Failed, reopened.GetRoundStage("run1", 2));
        Assert.Equal(new RunProgress(2, 1, 0.7), reopened.GetRunProgress("run1"));
        Assert.Equal(new RunProgress(0, 0, 0), reopened.GetRunProgress("run2"));
        Assert.Equal(Federated.Protos.V1.RunState.Aborted, reopened.GetRun("run2")!.State);
        Assert.Null(reopened.GetRun("run3"));
    }
}
