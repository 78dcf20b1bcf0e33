using Federated.Coordinator.Audit;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;
using TorchSharp;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The data holder's last word, end to end over mutual TLS: a client whose local budget a manifest would break
/// declines, sends nothing of its data, and the coordinator records the decline with the rule; the round completes
/// with the other two (t = 2).
/// </summary>
public sealed class PolicyDeclineTests(CoordinatorFixture coordinator, ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    private static readonly Dictionary<string, string[]> s_text = new(StringComparer.Ordinal)
    {
        ["alice"] = ["the cat sat on the mat", "the cat ate the fish"],
        ["bob"] = ["the dog ran in the park", "a dog digs in the yard"],
        ["carol"] = ["the bird flew over the tree", "a bird sings at dawn"],
    };

    [Fact]
    public async Task Round_ManifestOverOneClientsLocalBudget_ThatClientDeclinesSendsNothingAndTheRoundCompletesWithTheOthers()
    {
        string model = Path.Combine(coordinator.Root, "tiny");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 5);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        var generous = LocalPolicy.Load(WritePolicy("generous", maxEpsilonPerRun: 100));
        // One round at z = 1 and q = 1 costs epsilon ~4.7 at delta 1e-5 (Gaussian RDP): far over 0.5.
        var strict = LocalPolicy.Load(WritePolicy("strict", maxEpsilonPerRun: 0.5));

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        var results = new List<RoundWorkResult>();
        var ledgers = new Dictionary<string, int>(StringComparer.Ordinal);
        Task[] clients = [.. s_text.Keys.Select(name => Task.Run(() =>
            ClientAsync(name, model, name == "carol" ? strict : generous, results, ledgers, stop.Token)))];
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
        var plan = new RunPlan
        {
            BaseModel = model, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, MinSurvivors = 2, LocalSteps = 2, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1.0, Delta = 1e-6,
        };
        plan.TargetModules.Add("q_proj");
        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
        RunStatus status = await WorkerSession.WatchToEndAsync(admin, started.RunId, stop.Token);
        await stop.CancelAsync();
        await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));

        Assert.Equal(RunState.Completed, status.State);
        // Carol's side: declined by the budget rule, never reached the ledger charge that precedes any upload.
        RoundWorkResult declined = Assert.Single(results, r => !r.Participated);
        Assert.Equal("max_epsilon_per_run", declined.DeclinedRule);
        Assert.Equal(0UL, declined.UploadedBytes);
        Assert.Equal(0, ledgers["carol"]);
        Assert.Equal(1, ledgers["alice"]);
        Assert.Equal(1, ledgers["bob"]);
        // The coordinator's side: the round was summed over the two others, carol's row says declined, the audit names the rule.
        LedgerRecord charge = Assert.Single(coordinator.Host.State.Ledger.List(started.RunId, null));
        Assert.Equal(2, charge.Participants);
        IReadOnlyDictionary<string, ParticipantStatus> participants = coordinator.Host.State.Rounds.Participants(started.RunId, 1);
        Assert.Equal(ParticipantStatus.Declined, participants["carol"]);
        Assert.Equal(ParticipantStatus.Uploaded, participants["alice"]);
        Assert.Equal(ParticipantStatus.Uploaded, participants["bob"]);
        IReadOnlyList<AuditRecord> audit = coordinator.Host.State.Audit.Read(1, 100_000).Entries;
        AuditRecord entry = Assert.Single(audit, e => e.CanonicalJson.Contains("\"action\":\"round.decline\"", StringComparison.Ordinal));
        Assert.Contains("\"rule\":\"max_epsilon_per_run\"", entry.CanonicalJson, StringComparison.Ordinal);
        Assert.Contains("\"client_id\":\"carol\"", entry.CanonicalJson, StringComparison.Ordinal);
        Assert.Contains("\"reason\":\"Budget\"", entry.CanonicalJson, StringComparison.Ordinal);
        Assert.Contains(coordinator.Logs.Lines, l => l.Message.Contains("carol declined round 1", StringComparison.Ordinal));
        // The edge's own ledger prices the round exactly as the coordinator's accountant did (same Skellam RDP).
        using LocalPrivacyLedger aliceLedger = LocalPrivacyLedger.Open(Path.Combine(coordinator.Root, "alice-decline-" + LocalPrivacyLedger.FileName));
        Assert.Equal(charge.EpsilonAfter, aliceLedger.Spent(plan.Delta, started.RunId).Epsilon, 9);
    }

    [Fact]
    public async Task Run_EveryClientsPolicyRefusesTheTargets_RunFailsNamingTheRuleAndTheDeclineCount()
    {
        string model = Path.Combine(coordinator.Root, "tiny-targets");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 7);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        var policy = LocalPolicy.Load(WritePolicy("targets", maxEpsilonPerRun: 100));
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        var results = new List<RoundWorkResult>();
        var ledgers = new Dictionary<string, int>(StringComparer.Ordinal);
        Task[] clients = [.. s_text.Keys.Select(name => Task.Run(() => ClientAsync(name, model, policy, results, ledgers, stop.Token)))];
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
        var plan = new RunPlan
        {
            BaseModel = model, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, MinSurvivors = 2, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1.0, Delta = 1e-6,
        };
        // Not in any client's allowed_target_modules.
        plan.TargetModules.Add("gate_proj");
        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
        RunStatus status = await WorkerSession.WatchToEndAsync(admin, started.RunId, stop.Token);
        await stop.CancelAsync();
        await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));

        // The operator reads why in the run's status, not only in the audit JSON: the rule and how many declined.
        Assert.Equal(RunState.Failed, status.State);
        Assert.Contains("declined by allowed_target_modules (3)", status.Detail, StringComparison.Ordinal);
        Assert.Equal((0u, 5u), (status.ReleasedRounds, status.FailedRounds));
        Assert.All(results.Where(r => r.RunId == started.RunId), r => Assert.Equal("allowed_target_modules", r.DeclinedRule));
    }

    private async Task ClientAsync(string name, string model, LocalPolicy policy, List<RoundWorkResult> results, Dictionary<string, int> ledgers, CancellationToken cancellationToken)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        string ledgerPath = Path.Combine(coordinator.Root, name + "-decline-" + LocalPrivacyLedger.FileName);
        using LlamaForCausalLM local = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(ledgerPath))
        {
            var worker = new EdgeRoundWorker(connection, name, local, Batches(model, name), new LocalPolicyGate(policy, ledger, TimeProvider.System))
            {
                Report = e => output.WriteLine($"{name}: {e.Text}"),
            };
            await WorkerSession.RunAsync(connection, worker, results, cancellationToken);
        }
        // Reopened from disk: what the machine really recorded.
        using LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(ledgerPath);
        lock (ledgers)
        {
            ledgers[name] = reopened.Charges.Count;
        }
    }

    private static IReadOnlyList<TokenBatch> Batches(string model, string name)
    {
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(model);
        JsonlDataset set = JsonlDataset.Parse(s_text[name].Select(t => System.Text.Json.JsonSerializer.Serialize(new { text = t })), name, tokenizer, new DatasetOptions { MaxLength = 32 });
        return TokenBatcher.Batches(set.Examples, 2, tokenizer.PadId, shuffleSeed: 1);
    }

    private string WritePolicy(string name, double maxEpsilonPerRun)
    {
        string path = Path.Combine(coordinator.Root, name + "-" + LocalPolicy.FileName);
        File.WriteAllText(path, $$"""
            {
              "delta": 1e-5,
              "max_epsilon_per_run": {{maxEpsilonPerRun.ToString(System.Globalization.CultureInfo.InvariantCulture)}},
              "max_epsilon_lifetime": 1000,
              "min_noise_multiplier": 0.1,
              "allowed_mechanisms": ["distributed_skellam"],
              "allowed_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
              "max_rank": 16,
              "max_rounds_per_day": 100
            }
            """);
        return path;
    }
}
