using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;
using Federated.Protos.V1;

namespace Federated.Coordinator.Tests.State;

/// <summary>A write and the audit entry describing it commit together or not at all, whichever store writes.</summary>
public sealed class UnitOfWorkTests : IDisposable
{
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

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void BudgetsSet_AuditInsertFails_BudgetRolledBack(StateBackend backend)
    {
        Use(backend);
        RefuseAuditInserts(true);

        Exception ex = Assert.Throws(_database!.RefusalException, () => _state.Budgets.Set("default", 4, 1e-6, "officer"));

        Assert.Contains("audit refused", ex.Message, StringComparison.Ordinal);
        Assert.Null(_state.Budgets.Get("default"));
        RefuseAuditInserts(false);
        _state.Budgets.Set("default", 4, 1e-6, "officer");
        Assert.Equal(4, _state.Budgets.Get("default")!.Epsilon);
        Assert.Single(_state.Audit.Read(1, 10).Entries);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void RoundsComplete_AuditInsertFails_NothingOfTheCompletionIsWritten(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 100, 1e-5, "officer");
        _state.Runs.Create("run1", [1], "default", 2.0, 1.1, "a0", "engineer");
        _state.Rounds.Start("run1", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, "a0");
        int entriesBefore = _state.Audit.Read(1, 100).Entries.Count;
        var completion = new RoundCompletion(
            new LedgerRecord(0, "run1", 1, "default", 0.5, 0.5, 1e-6, 1, 1.1, 1.0, 1, default) { Rdp = TestCharges.Rdp() },
            new StoredAdapter("a1", 10, [1]),
            new Dictionary<string, ParticipantStatus> { ["alice"] = ParticipantStatus.Uploaded, ["bob"] = ParticipantStatus.Dropped });
        // Only the last write of the completion fails: everything before it in the transaction was already executed.
        RefuseAuditInserts(true, action: "round.complete");

        Assert.Throws(_database!.RefusalException, () => _state.Rounds.Complete(completion));

        // The charge, the adapter's row and entry, the statuses, the round's end and the run's adapter all rolled back.
        Assert.Empty(_state.Ledger.List("run1", null));
        Assert.False(_state.AdapterRecords.IsRecorded("a1"));
        Assert.All(_state.Rounds.Participants("run1", 1).Values, s => Assert.Equal(ParticipantStatus.Selected, s));
        Assert.Equal(RoundStage.Manifest, _state.Rounds.Stage("run1", 1));
        Assert.Equal("a0", _state.Runs.Get("run1")!.AdapterSha256);
        Assert.Equal(entriesBefore, _state.Audit.Read(1, 100).Entries.Count);

        RefuseAuditInserts(false);
        LedgerRecord charged = _state.Rounds.Complete(completion);
        Assert.Equal(0.5, charged.EpsilonAfter);
        Assert.Equal(ParticipantStatus.Dropped, _state.Rounds.Participants("run1", 1)["bob"]);
        Assert.Equal("a1", _state.Runs.Get("run1")!.AdapterSha256);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Write_ThrowsAfterWritesOfSeveralStores_NoneOfThemCommits(StateBackend backend)
    {
        Use(backend);
        Assert.Throws<InvalidOperationException>(() => _state.Database.Write(work =>
        {
            _state.AdapterRecords.Record(work, new StoredAdapter("a0", 10, [1]), "run1", 0, "coordinator");
            _state.Runs.Create(work, "run1", [1], "default", 2.0, 1.1, "a0", "engineer");
            throw new InvalidOperationException("refused after the writes");
        }));

        Assert.Null(_state.Runs.Get("run1"));
        Assert.False(_state.AdapterRecords.IsRecorded("a0"));
        Assert.Empty(_state.Audit.Read(1, 10).Entries);
        Assert.Null(_state.Audit.Read(1, 10).Head);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void BudgetsRequireAffordable_MoreThanRemains_RefusedNamingTheNumbers(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 2.0, 1e-6, "officer");
        _state.Database.Write(work => _state.Ledger.Charge(work, new LedgerRecord(0, "run1", 1, "default", 0.75, 0.75, 1e-6, 1, 1.1, 1.0, 3, default) { Rdp = TestCharges.Rdp() }));
        double spent = TestCharges.Epsilon(1, 1e-6);
        PrivacyPlan tooMuch = PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, 1024, 3, 2, 32, 1.0, 0.5, 10, 1e-6));
        PrivacyPlan small = PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, 1024, 3, 2, 32, 1.0, 1000, 1, 1e-6));

        var ex = Assert.Throws<BudgetRefusedException>(() => _state.Budgets.RequireAffordable("default", tooMuch));
        var none = Assert.Throws<BudgetRefusedException>(() => _state.Budgets.RequireAffordable("other", small));

        Assert.StartsWith($"the plan needs epsilon {tooMuch.Epsilon.Epsilon:G6} at delta 1E-06 over 10 rounds but population 'default' has ", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"left of its budget 2 at delta 1E-06 (spent {spent:G6}, reserved 0); with this run it would commit ", ex.Message, StringComparison.Ordinal);
        Assert.EndsWith("(client-level, replace-one)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("no budget is set for population 'other'", none.Message, StringComparison.Ordinal);
        Assert.Equal(spent, _state.Budgets.RequireAffordable("default", small).EpsilonSpent, 12);
    }

    [Fact]
    public void ParticipantStatusText_EachStatus_StoredAsItsWordAndParsedBack()
    {
        var words = new Dictionary<ParticipantStatus, string>
        {
            [ParticipantStatus.Selected] = "selected",
            [ParticipantStatus.Declined] = "declined",
            [ParticipantStatus.Uploaded] = "uploaded",
            [ParticipantStatus.Dropped] = "dropped",
        };

        Assert.Equal(Enum.GetValues<ParticipantStatus>(), words.Keys);
        Assert.All(words, pair => Assert.Equal(pair.Value, pair.Key.ToStored()));
        Assert.All(words, pair => Assert.Equal(pair.Key, ParticipantStatusText.Parse(pair.Value)));
    }

    [Fact]
    public void ParticipantStatusText_UnknownWord_Refused() =>
        Assert.Throws<InvalidDataException>(() => ParticipantStatusText.Parse("vanished"));

    // A trigger makes every audit INSERT fail the way a full disk or a constraint would, from a second connection.
    private void RefuseAuditInserts(bool refuse, string? action = null) => _database!.RefuseAuditInserts(refuse, action);
}
