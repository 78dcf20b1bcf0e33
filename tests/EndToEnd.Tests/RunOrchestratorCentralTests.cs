using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Wire;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The central mechanism over the wire: clients clip and round without noise under SecAgg+ at the plan's hard-bound
/// scale, the coordinator adds discrete Gaussian integers to the unmasked modular sum before decoding.
/// </summary>
public sealed class RunOrchestratorCentralTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    [Fact]
    public async Task StartRun_CentralGaussian_CoordinatorNoisesTheRingSumAndChargesDiscreteGaussianRdp()
    {
        const double z = 0.5;
        string baseModel = Path.Combine(coordinator.Root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 23);
        coordinator.Host.State.Budgets.Set("default", 100, 1e-5, "officer");
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, coordinator.Address))];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        RunStatus final;
        StartRunResponse started;
        byte[] adapter;
        try
        {
            using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
            var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
            var plan = new RunPlan
            {
                BaseModel = baseModel, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
                ClipNorm = 1.0, Mechanism = NoiseMechanism.CentralGaussian, NoiseMultiplier = z, Delta = 1e-6, MinSurvivors = 2,
            };
            plan.TargetModules.Add("q_proj");
            started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
            using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, new CallOptions(cancellationToken: stop.Token));
            final = (await watch.ResponseStream.ReadAllAsync(stop.Token).ToListAsync(stop.Token))[^1];

            using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
            using var asAlice = new CoordinatorConnection(coordinator.Address, alice);
            adapter = await AdapterDownload.DownloadAsync(asAlice,
                new AdapterRef { Sha256 = final.AdapterSha256, SizeBytes = (ulong)coordinator.Host.State.AdapterRecords.Get(final.AdapterSha256)!.Value.SizeBytes }, stop.Token);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(running.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        }

        Assert.Equal(RunState.Completed, final.State);
        RoundManifest manifest = clients[0].Manifests.Single(m => m.Round.RunId == started.RunId);
        Assert.Equal((NoiseMechanism.CentralGaussian, 0.0), (manifest.Dp.Mechanism, manifest.Dp.PerClientVariance));
        LedgerRecord charge = Assert.Single(coordinator.Host.State.Ledger.List(started.RunId, null));
        Assert.Equal(((int)NoiseMechanism.CentralGaussian, 3), (charge.Mechanism, charge.Participants));
        // The accountant, independently: one discrete Gaussian round at replace-one (RDP a (2 Delta)^2 / (2 sigma^2)), q = 1.
        int dimension = clients[0].Dimension;
        double epsilon = ExpectedPrice.Central(dimension, 3, 2, z, 1, 1e-6);
        Assert.Equal(epsilon, started.PlannedEpsilon, 1e-9);
        Assert.Equal(epsilon, charge.EpsilonAfter, 1e-9);
        CentralGaussianPlan central = CentralGaussianPlan.Calibrate(new DSkellamParameters(dimension, 32, 1.0, z, 3, 2));
        Assert.Equal(central.Quantizer.Scale, manifest.Dp.Scale, central.Quantizer.Scale * 1e-12);

        // B started at zero, so B is now the noisy mean: the clients added no noise, so any error beyond rounding is the coordinator's.
        float[] b = GlobalAdapterBlob.Read(adapter).Tensors.OnlyB().Flatten();
        int d = b.Length;
        float[][] updates = [.. clients.Select(c => c.Update(d))];
        double error = Math.Sqrt(b.Select((x, i) => Math.Pow(x - updates.Average(u => u[i]), 2)).Sum());
        // The discrete Gaussian's sigma in update units: sqrt(sigma^2) integer units over the scale, about z times the decoded norm bound.
        double sigmaOfMean = Math.Sqrt(central.SigmaSquared) / central.Quantizer.Scale / 3;
        Assert.InRange(error, 0.5 * Math.Sqrt(d) * sigmaOfMean, 1.5 * Math.Sqrt(d) * sigmaOfMean);
    }
}
