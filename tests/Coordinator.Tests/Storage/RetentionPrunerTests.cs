using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Cli;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.Coordinator.Tests.State;
using Federated.Coordinator.Storage;
using Federated.Protos.V1;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Federated.Coordinator.Tests.Storage;

public sealed class RetentionPrunerTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 1, 12, 0, 0, TimeSpan.Zero));
    private readonly X509Certificate2 _auditSigner = TestSigner.Create();
    private readonly X509Certificate2 _ca;
    private readonly AdapterSigner _signer;
    private readonly AtRestCipher _cipher;
    private TestStateDatabase? _database;
    private CoordinatorState _state = null!;
    private AdapterStore _store = null!;

    public RetentionPrunerTests()
    {
        (_ca, _signer) = TestAdapterSigner.Create(_dir.File("pki"));
        AtRestCipher.CreateKeyFile(_dir.File("at-rest.key"));
        _cipher = AtRestCipher.FromKeyFile(_dir.File("at-rest.key"));
    }

    private void Use(StateBackend backend)
    {
        _database = new TestStateDatabase(backend);
        _state = _database.Open(_auditSigner, _time);
        _store = TestStateDatabase.Adapters(_state, _signer, _cipher);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
    }

    public void Dispose()
    {
        _state?.Dispose();
        _database?.Dispose();
        _cipher.Dispose();
        _signer.Dispose();
        _ca.Dispose();
        _auditSigner.Dispose();
        _dir.Dispose();
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public async Task PruneNow_RoundsOlderThanRetention_RemovesTheirAdaptersAndParticipantsKeepsCurrentAdaptersAndTheAuditVerifies(StateBackend backend)
    {
        Use(backend);
        // Day 0: run A completes two rounds; run C completes one round and starts a second that is still in progress.
        string a0 = Adapter("run-a", 0);
        _state.Runs.Create("run-a", [1], "default", 2, 1, a0, "engineer");
        string a1 = CompletedRound("run-a", 1, a0);
        string a2 = CompletedRound("run-a", 2, a1);
        _state.Runs.End("run-a", RunState.Completed, "2 of 2 rounds released", "coordinator");
        string c0 = Adapter("run-c", 0);
        _state.Runs.Create("run-c", [2], "default", 2, 1, c0, "engineer");
        string c1 = CompletedRound("run-c", 1, c0);
        _state.Rounds.Start("run-c", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, c1);
        // Day 40: run B completes a round.
        _time.Advance(TimeSpan.FromDays(40));
        string b0 = Adapter("run-b", 0);
        _state.Runs.Create("run-b", [3], "default", 2, 1, b0, "engineer");
        string b1 = CompletedRound("run-b", 1, b0);
        int ledgerBefore = _state.Ledger.List(null, null).Count;
        var pruner = new RetentionPruner(_state, _store, new CoordinatorOptions { Pki = "p", RetentionDays = 30 }, _time, NullLogger<RetentionPruner>.Instance);

        RetentionResult result = pruner.PruneNow()!;

        Assert.Equal(new[] { a0, a1, c0 }.Order(StringComparer.Ordinal), result.Adapters.Order(StringComparer.Ordinal));
        Assert.Equal(3, result.Rounds);
        foreach (string gone in new[] { a0, a1, c0 })
        {
            Assert.Null(_store.Open(gone));
            Assert.False(_database!.StoredAdapterExists($"{gone}.adapter.enc"));
        }
        // The final adapter of the completed run, the latest of the running one, and everything recent stay readable.
        foreach (string kept in new[] { a2, c1, b0, b1 })
        {
            Assert.NotNull(_store.Read(kept));
        }
        Assert.Empty(_state.Rounds.Participants("run-a", 1));
        Assert.Empty(_state.Rounds.Participants("run-a", 2));
        Assert.Empty(_state.Rounds.Participants("run-c", 1));
        Assert.Equal(2, _state.Rounds.Participants("run-c", 2).Count);
        Assert.Equal(2, _state.Rounds.Participants("run-b", 1).Count);
        Assert.Equal(ledgerBefore, _state.Ledger.List(null, null).Count);
        Assert.Equal(RoundStage.Completed, _state.Rounds.Stage("run-a", 1));
        var audit = _state.Audit.Read(1, 100_000).Entries;
        Assert.Contains("\"action\":\"retention.prune\"", audit[^1].CanonicalJson, StringComparison.Ordinal);
        Assert.Contains(a0, audit[^1].CanonicalJson, StringComparison.Ordinal);
        // The pruned adapters' hashes remain where they were first recorded.
        Assert.Contains(audit.SkipLast(1), e => e.CanonicalJson.Contains(a1, StringComparison.Ordinal) && e.CanonicalJson.Contains("adapter.store", StringComparison.Ordinal));

        // A second pass finds nothing and appends nothing.
        Assert.Empty(pruner.PruneNow()!.Adapters);
        Assert.Equal(audit.Count, _state.Audit.Read(1, 100_000).Entries.Count);

        _state.Dispose();
        Assert.Equal(CliRunner.Ok, await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["audit", "verify", "--state", _database!.Argument]));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void PruneNow_RetentionOff_RemovesNothing(StateBackend backend)
    {
        Use(backend);
        string a0 = Adapter("run-a", 0);
        _time.Advance(TimeSpan.FromDays(5000));
        var pruner = new RetentionPruner(_state, _store, new CoordinatorOptions { Pki = "p", RetentionDays = 0 }, _time, NullLogger<RetentionPruner>.Instance);

        Assert.Null(pruner.PruneNow());
        Assert.NotNull(_store.Read(a0));
    }

    private string Adapter(string runId, int round) => _store.Put(RandomNumberGenerator.GetBytes(64), runId, round);

    private string CompletedRound(string runId, int round, string before)
    {
        _state.Rounds.Start(runId, round, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, before);
        StoredAdapter after = _store.Write(RandomNumberGenerator.GetBytes(64));
        _state.Rounds.Complete(new RoundCompletion(new LedgerRecord(0, runId, round, "default", 0.1 * round, 0.1, 1e-6, 1, 1, 1, 2, default) { Rdp = TestCharges.Rdp() }, after,
            new Dictionary<string, ParticipantStatus> { ["alice"] = ParticipantStatus.Uploaded, ["bob"] = ParticipantStatus.Uploaded }));
        return after.Sha256;
    }
}
