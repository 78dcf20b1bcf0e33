using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Wire;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>Runs through StartRun over the admin service; clients submit fixed updates so the released adapter can be checked.</summary>
public sealed class RunOrchestratorTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    [Fact]
    public async Task StartRun_TwoRoundsOfDistributedSkellam_AdapterMovesByMeanAndLedgerMatchesAccountant()
    {
        string baseModel = Path.Combine(coordinator.Root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 7);
        coordinator.Host.State.Budgets.Set("default", 100, 1e-5, "officer");
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = 2, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
        };
        plan.TargetModules.Add("q_proj");
        plan.TargetModules.Add("v_proj");
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var updates = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var downloaded = new List<string>();
        Task[] clients = [.. s_clients.Select(name => Task.Run(() => ClientAsync(name, updates, downloaded, stop.Token)))];

        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
        RunStatus status = await WaitForEndAsync(admin, asEngineer, started.RunId, stop.Token);
        await stop.CancelAsync();
        await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));

        Assert.Equal(RunState.Completed, status.State);
        IReadOnlyList<LedgerRecord> ledger = coordinator.Host.State.Ledger.List(started.RunId, null);
        Assert.Equal([1, 2], ledger.Select(l => l.Round));
        Assert.All(ledger, l => Assert.Equal(3, l.Participants));
        // The accountant, independently: replace-one Skellam RDP of the calibrated plan, composed over two rounds, at the
        // run's delta for the run and at the budget's delta for the population.
        int d = updates.Values.First().Length;
        DSkellamPlan expected = DSkellamPlan.Calibrate(new DSkellamParameters(d, 32, 1.0, 0.5, MaxClients: 3, MinClients: 2));
        double epsilon = ExpectedPrice.Skellam(d, 3, 2, 0.5, 2, 1e-6);
        Assert.Equal(epsilon, ledger[^1].EpsilonAfter, 1e-9);
        Assert.Equal(epsilon, started.PlannedEpsilon, 1e-9);
        Assert.Equal(("client", "replace-one"), (started.PrivacyUnit, started.Adjacency));
        BudgetRecord budget = coordinator.Host.State.Budgets.Get("default")!;
        Assert.Equal(ExpectedPrice.Skellam(d, 3, 2, 0.5, 2, 1e-5), budget.EpsilonSpent, 1e-9);
        Assert.Equal(0, budget.EpsilonReserved, 12);

        // The final adapter is B0 (zero) plus two noisy means of the same updates.
        using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, alice);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        Assert.NotEqual(downloaded[0], status.AdapterSha256);
        byte[] final = await AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = status.AdapterSha256, SizeBytes = (ulong)AdapterSize(status.AdapterSha256) }, CancellationToken.None);
        float[] b = GlobalAdapterBlob.Read(final).Tensors.OnlyB().Flatten();
        double error = Math.Sqrt(b.Select((x, i) => Math.Pow(x - 2 * updates.Values.Average(u => u[i]), 2)).Sum());
        double noise = Math.Sqrt(2) * expected.NoiseStdDevOfSum(3) / 3;
        Assert.InRange(error, 0.3 * Math.Sqrt(d) * noise, 2.0 * Math.Sqrt(d) * noise + 0.05);
    }

    [Fact]
    public async Task StartRun_PlanBeyondBudget_RefusedWithPlannedAndRemainingEpsilon()
    {
        string baseModel = Path.Combine(coordinator.Root, "base-small");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 3);
        coordinator.Host.State.Budgets.Set("tight", 0.5, 1e-5, "officer");
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = 100, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, Population = "tight",
        };
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);

        var refused = await Assert.ThrowsAsync<RpcException>(() => admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None)).ResponseAsync);

        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.Contains("over 100 rounds but population 'tight' has 0.5 left of its budget 0.5 at delta 1E-05 (spent 0, reserved 0)", refused.Status.Detail, StringComparison.Ordinal);
    }

    private long AdapterSize(string sha256) => coordinator.Host.State.AdapterRecords.Get(sha256)!.Value.SizeBytes;

    private static async Task<RunStatus> WaitForEndAsync(AdminService.AdminServiceClient admin, CoordinatorConnection connection, string runId, CancellationToken cancellationToken)
    {
        using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = runId }, new CallOptions(cancellationToken: cancellationToken));
        RunStatus? last = null;
        await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(cancellationToken))
        {
            last = status;
        }
        _ = connection;
        return last ?? throw new InvalidOperationException("WatchRun ended without a status");
    }

    private async Task ClientAsync(string name, Dictionary<string, float[]> updates, List<string> downloaded, CancellationToken cancellationToken)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        var participant = new SecAggParticipant(connection, name);
        var session = new EdgeSession(connection, new RegisterRequest { ClientVersion = "test", Device = "cpu" });
        try
        {
            await session.RunAsync(async (invitation, ct) =>
            {
                RoundManifest manifest = await participant.FetchManifestAsync(invitation, ct);
                byte[] content = await AdapterDownload.DownloadAsync(connection, manifest.GlobalAdapter, ct);
                int d = (int)GlobalAdapterBlob.Read(content).Tensors.OnlyB().ElementCount;
                float[] update;
                lock (updates)
                {
                    downloaded.Add(manifest.GlobalAdapter.Sha256);
                    if (!updates.TryGetValue(name, out update!))
                    {
                        update = updates[name] = Update(d, name);
                    }
                }
                // The release threshold travels apart from the graph's (here the complete graph, where they are one) and prices the round.
                Assert.Equal(manifest.Secagg.Threshold, manifest.Dp.MinSurvivors);
                Assert.Equal((int)manifest.Dp.MinSurvivors, ManifestPrivacy.Parameters(manifest, d).Threshold);
                DSkellamPlan plan = PrivacyPlan.Create(ManifestPrivacy.Parameters(manifest, d)).Quantizer;
                Assert.Equal(plan.Scale, manifest.Dp.Scale, 1e-9);
                await participant.ParticipateAsync(manifest, (m, _) => Task.FromResult(new DSkellamEncoder(plan, m.Dp.RotationSeed.Span).Encode(update).Values), ct);
            }, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            // The test ends the session.
        }
    }

    // A shared direction of norm 0.6 plus a per-client part: under the clip norm and far from zero on average.
    private static float[] Update(int d, string name)
    {
        float[] common = Direction(d, "common");
        float[] own = Direction(d, name);
        return [.. common.Select((c, i) => 0.6f * c + 0.2f * own[i])];
    }

    private static float[] Direction(int d, string label)
    {
        byte[] seed = SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(label));
        var random = new Random(BitConverter.ToInt32(seed));
        float[] v = [.. Enumerable.Range(0, d).Select(_ => (float)(random.NextDouble() - 0.5))];
        float norm = MathF.Sqrt(v.Sum(x => x * x));
        return [.. v.Select(x => x / norm)];
    }
}
