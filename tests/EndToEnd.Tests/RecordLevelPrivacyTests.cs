using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Cli;
using Federated.Coordinator.Cli;
using Federated.Coordinator.State;
using Federated.EdgeClient.Cli;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// privacy_unit both end to end over mutual TLS: two rounds in which every edge trains with DP-SGD and the aggregate
/// carries distributed noise; the coordinator's ledger and every edge's client-level ledger are charged as before, every
/// edge's record-level ledger is charged at its own record count, and both units show in ledger show and run status.
/// </summary>
public sealed class RecordLevelPrivacyTests(CoordinatorFixture coordinator, ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    private const double RecordNoise = 1.1;
    private const double RecordClip = 1.0;
    private const int ExpectedBatch = 2;
    private const int LocalSteps = 3;

    // Eight records each: q = 2 / 8 at every edge.
    private static readonly Dictionary<string, string[]> s_text = new(StringComparer.Ordinal)
    {
        ["alice"] = ["the cat sat on the mat", "the cat ate the fish", "a cat naps in the sun", "the cat saw a mouse",
            "the cat sleeps on the bed", "a cat plays with yarn", "the cat drank the milk", "the cat hid in a box"],
        ["bob"] = ["the dog ran in the park", "a dog digs in the yard", "the dog barks at night", "the dog found a stick",
            "the dog chased the ball", "a dog sleeps by the door", "the dog ate the bone", "the dog swam in the lake"],
        ["carol"] = ["the bird flew over the tree", "a bird sings at dawn", "the bird built a nest", "the bird ate a seed",
            "a bird drinks from the pond", "the bird sat on the wire", "a bird hops on the grass", "the bird woke at dawn"],
    };

    [Fact]
    public async Task TwoRounds_PrivacyUnitBoth_BothLedgersChargedAndBothUnitsReported()
    {
        string model = Path.Combine(coordinator.Root, "tiny-both");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 13);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        var clients = new RecordLevelClients(coordinator, output, model, "both");
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        Task[] running = [.. s_text.Keys.Select(name =>
        {
            LocalPolicy policy = clients.WritePolicy(name, maxRecordEpsilon: 50);
            var records = clients.Records(s_text[name], name);
            return Task.Run(() => clients.RunAsync(name, policy, records, stop.Token));
        })];
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
        var plan = new RunPlan
        {
            BaseModel = model, LoraRank = 2, Rounds = 2, ClientsPerRound = 3, MinSurvivors = 3, LocalSteps = LocalSteps, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1.0, Delta = 1e-6,
            PrivacyUnit = PrivacyUnit.Both, RecordNoiseMultiplier = RecordNoise, RecordMaxGradNorm = RecordClip, RecordExpectedBatch = ExpectedBatch,
        };
        plan.TargetModules.Add("q_proj");
        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
        RunStatus status = await WorkerSession.WatchToEndAsync(admin, started.RunId, stop.Token);
        await stop.CancelAsync();
        await Task.WhenAll(running.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));

        Assert.Equal(RunState.Completed, status.State);
        Assert.All(clients.Results, r => Assert.True(r.Participated, $"round {r.Round} declined: {r.Message}"));
        // Client level, as under privacy_unit client: the coordinator charged both rounds at its planned price.
        IReadOnlyList<LedgerRecord> charges = coordinator.Host.State.Ledger.List(started.RunId, null);
        Assert.Equal(2, charges.Count);
        Assert.Equal(started.PlannedEpsilon, charges[^1].EpsilonAfter, 1e-9);
        // Record level: 2 rounds x 3 DP-SGD steps at q = 2 / 8, z = 1.1, at the holders' delta 1e-5, by the accountant
        // validated against Opacus.
        var accountant = new RdpAccountant();
        accountant.ComposeSubsampledGaussian(RecordLevelPricing.SamplingRate(ExpectedBatch, 8), RecordNoise, 2 * LocalSteps);
        double recordEpsilon = accountant.GetEpsilon(1e-5).Epsilon;
        foreach (string name in s_text.Keys)
        {
            using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(clients.LedgerPath(name));
            Assert.Equal(2, ledger.Charges.Count);
            Assert.Equal(2, ledger.RecordCharges.Count);
            Assert.Equal(charges[^1].EpsilonAfter, ledger.Spent(plan.Delta, started.RunId).Epsilon, 9);
            Assert.Equal(recordEpsilon, ledger.RecordSpent(1e-5, started.RunId).Epsilon, 12);
        }

        // edge-client ledger show --json: both units per run and in lifetime.
        var (code, shown, error) = await CapturedAsync(() => CliRunner.RunAsync("edge-client", EdgeClientCommands.Configure,
            ["ledger", "show", "--ledger", clients.LedgerPath("alice"), "--policy", clients.PolicyPath("alice"), "--json"]));
        Assert.True(code == 0, error);
        JsonElement ledgerJson = JsonDocument.Parse(shown).RootElement;
        JsonElement run = Assert.Single(ledgerJson.GetProperty("runs").EnumerateArray());
        Assert.Equal(recordEpsilon, run.GetProperty("record_epsilon").GetDouble(), 12);
        Assert.Equal(recordEpsilon, ledgerJson.GetProperty("lifetime").GetProperty("record_epsilon").GetDouble(), 12);
        Assert.True(run.GetProperty("epsilon").GetDouble() > 0);

        // coordinator run status (--json and text): the run's unit and its record-level parameters, no invented epsilon.
        string[] asAdmin = ["--coordinator", coordinator.Address.ToString(), "--identity", coordinator.Identity("engineer"), "--ca", coordinator.CaPath];
        (code, shown, error) = await CapturedAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["run", "status", started.RunId, "--json", .. asAdmin]));
        Assert.True(code == 0, error);
        JsonElement statusJson = JsonDocument.Parse(shown).RootElement;
        Assert.Equal("both", statusJson.GetProperty("privacy_unit").GetString());
        Assert.Equal(RecordNoise, statusJson.GetProperty("record_noise_multiplier").GetDouble());
        Assert.Equal(RecordClip, statusJson.GetProperty("record_max_grad_norm").GetDouble());
        Assert.Equal(charges[^1].EpsilonAfter, statusJson.GetProperty("epsilon_spent").GetDouble(), 9);
        // Each holder reported its own record epsilon with its uploads: shown per client, unverified, charged nowhere.
        JsonElement[] reported = [.. statusJson.GetProperty("reported_record_epsilons").EnumerateArray()];
        Assert.Equal(s_text.Keys.Order(StringComparer.Ordinal), reported.Select(r => r.GetProperty("client_id").GetString()));
        Assert.All(reported, r => Assert.Equal(recordEpsilon, r.GetProperty("epsilon").GetDouble(), 12));
        Assert.All(reported, r => Assert.Equal(2, r.GetProperty("round").GetInt32()));
        (code, shown, error) = await CapturedAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["run", "status", started.RunId, .. asAdmin]));
        Assert.True(code == 0, error);
        Assert.Contains("DP-SGD at every edge: noise multiplier 1.1, clip 1", shown, StringComparison.Ordinal);
        Assert.Contains("each holder's own claim, unverified", shown, StringComparison.Ordinal);
    }

    private static Task<(int Code, string Out, string Err)> CapturedAsync(Func<Task<int>> run) => ConsoleCapture.RunAsync(run);
}
