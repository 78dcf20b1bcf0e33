using Federated.Coordinator.Audit;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// A holder whose max_record_epsilon the run's DP-SGD plan would pass, at its own record count, declines before training
/// naming the rule; nothing is charged under either unit, and the round completes with the others.
/// </summary>
public sealed class RecordLevelDeclineTests(CoordinatorFixture coordinator, ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    private static readonly Dictionary<string, string[]> s_text = new(StringComparer.Ordinal)
    {
        ["alice"] = ["the cat sat on the mat", "the cat ate the fish", "a cat naps in the sun", "the cat saw a mouse"],
        ["bob"] = ["the dog ran in the park", "a dog digs in the yard", "the dog barks at night", "the dog found a stick"],
        ["carol"] = ["the bird flew over the tree", "a bird sings at dawn", "the bird built a nest", "the bird ate a seed"],
    };

    [Fact]
    public async Task Round_RecordPlanOverOneHoldersMaxRecordEpsilon_ThatHolderDeclinesUnchargedAndTheRoundCompletes()
    {
        string model = Path.Combine(coordinator.Root, "tiny-record-decline");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 17);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        var clients = new RecordLevelClients(coordinator, output, model, "decline");
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        Task[] running = [.. s_text.Keys.Select(name =>
        {
            // Two steps at q = 2 / 4, z = 1: record epsilon far above 0.05 at delta 1e-5.
            LocalPolicy policy = clients.WritePolicy(name, maxRecordEpsilon: name == "carol" ? 0.05 : 50);
            var records = clients.Records(s_text[name], name);
            return Task.Run(() => clients.RunAsync(name, policy, records, stop.Token));
        })];
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
        var plan = new RunPlan
        {
            BaseModel = model, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, MinSurvivors = 2, LocalSteps = 2, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1.0, Delta = 1e-6,
            PrivacyUnit = PrivacyUnit.Both, RecordNoiseMultiplier = 1.0, RecordMaxGradNorm = 1.0, RecordExpectedBatch = 2,
        };
        plan.TargetModules.Add("q_proj");
        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
        RunStatus status = await WorkerSession.WatchToEndAsync(admin, started.RunId, stop.Token);
        await stop.CancelAsync();
        await Task.WhenAll(running.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));

        Assert.Equal(RunState.Completed, status.State);
        var declined = Assert.Single(clients.Results, r => !r.Participated);
        Assert.Equal(LocalPolicyGate.MaxRecordEpsilonRule, declined.DeclinedRule);
        Assert.Equal(0UL, declined.UploadedBytes);
        using (LocalPrivacyLedger carol = LocalPrivacyLedger.Open(clients.LedgerPath("carol")))
        {
            Assert.Empty(carol.Charges);
            Assert.Empty(carol.RecordCharges);
        }
        using (LocalPrivacyLedger alice = LocalPrivacyLedger.Open(clients.LedgerPath("alice")))
        {
            Assert.Single(alice.Charges);
            Assert.Single(alice.RecordCharges);
        }
        Assert.Equal(2, Assert.Single(coordinator.Host.State.Ledger.List(started.RunId, null)).Participants);
        IReadOnlyList<AuditRecord> audit = coordinator.Host.State.Audit.Read(1, 100_000).Entries;
        AuditRecord entry = Assert.Single(audit, e => e.CanonicalJson.Contains("\"action\":\"round.decline\"", StringComparison.Ordinal));
        Assert.Contains("\"rule\":\"max_record_epsilon\"", entry.CanonicalJson, StringComparison.Ordinal);
        Assert.Contains("\"reason\":\"Budget\"", entry.CanonicalJson, StringComparison.Ordinal);
    }
}
