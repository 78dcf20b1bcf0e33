using Federated.Aggregation.Privacy;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;

namespace Federated.EndToEnd.Tests;

/// <summary>Runs that select clients by Poisson sampling (sampling_rate) instead of a fixed count.</summary>
public sealed class RunOrchestratorSamplingTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    [Fact]
    public async Task StartRun_SamplingRateOne_EveryAvailableClientTakesPartAndRoundChargedWithoutAmplification()
    {
        (RandomUpdateClient[] clients, RunStatus final, StartRunResponse started) = await RunAsync(samplingRate: 1.0, rounds: 1);

        Assert.Equal(RunState.Completed, final.State);
        LedgerRecord charge = Assert.Single(coordinator.Host.State.Ledger.List(started.RunId, null));
        Assert.Equal(3, charge.Participants);
        RoundManifest manifest = clients[0].Manifests.Single(m => m.Round.RunId == started.RunId);
        Assert.Equal((3u, (uint)RunPlanValidation.MaxClientsPerRound), (manifest.Secagg.Participants, manifest.Dp.MaxClients));
        // Priced and charged as one full Skellam round sized for the cap: no amplification by the sampling rate is claimed.
        double epsilon = ExpectedPrice.Skellam(clients[0].Dimension, RunPlanValidation.MaxClientsPerRound, 2, 0.5, 1, 1e-6);
        Assert.Equal(epsilon, started.PlannedEpsilon, 1e-9);
        Assert.Equal(epsilon, charge.EpsilonAfter, 1e-9);
    }

    [Fact]
    public async Task StartRun_SamplingRateTooLowForThreshold_RoundsSkippedUnchargedThenRunFails()
    {
        coordinator.Host.Services.GetRequiredService<RunOrchestrator>().MaxSkippedRoundsInARow = 3;
        double spentBefore = coordinator.Host.State.Budgets.Get("default")?.EpsilonSpent ?? 0;

        // With q = 1e-4 and three clients, a sample of t = 2 has probability 3e-8 per round.
        (_, RunStatus final, StartRunResponse started) = await RunAsync(samplingRate: 1e-4, rounds: 1);

        Assert.Equal(RunState.Failed, final.State);
        Assert.Contains("3 rounds in a row sampled too few", final.Detail, StringComparison.Ordinal);
        Assert.Empty(coordinator.Host.State.Ledger.List(started.RunId, null));
        Assert.Equal(spentBefore, coordinator.Host.State.Budgets.Get("default")!.EpsilonSpent);
        Assert.All(Enumerable.Range(1, 3), r => Assert.Equal(RoundStage.Failed, coordinator.Host.State.Rounds.Stage(started.RunId, r)));
    }

    [Fact]
    public async Task StartRun_BothCountAndRate_RefusedNamingBoth()
    {
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        string baseModel = Path.Combine(coordinator.Root, "base-both");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 19);
        RunPlan plan = Plan(baseModel, 0.5, 1);
        plan.ClientsPerRound = 3;

        var refused = await Assert.ThrowsAsync<RpcException>(() => new AdminService.AdminServiceClient(asEngineer.Channel)
            .StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None)).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, refused.StatusCode);
        Assert.Contains("set exactly one of clients_per_round (3) and sampling_rate (0.5)", refused.Status.Detail, StringComparison.Ordinal);
    }

    private async Task<(RandomUpdateClient[] Clients, RunStatus Final, StartRunResponse Started)> RunAsync(double samplingRate, uint rounds)
    {
        string baseModel = Path.Combine(coordinator.Root, "base");
        if (!Directory.Exists(baseModel))
        {
            TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 17);
        }
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, coordinator.Address))];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        try
        {
            // Sampling draws from the clients available now: wait until all three have registered.
            while (coordinator.Host.State.Clients.List(TimeSpan.FromSeconds(3)).Count(c => s_clients.Contains(c.ClientId) && c.Available) < s_clients.Length)
            {
                await Task.Delay(100, stop.Token);
            }
            using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
            var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
            StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = Plan(baseModel, samplingRate, rounds) }, asEngineer.Call(CancellationToken.None));
            using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, new CallOptions(cancellationToken: stop.Token));
            RunStatus final = (await watch.ResponseStream.ReadAllAsync(stop.Token).ToListAsync(stop.Token))[^1];
            return (clients, final, started);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(running.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }

    private static RunPlan Plan(string baseModel, double samplingRate, uint rounds)
    {
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = rounds, SamplingRate = samplingRate, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
        };
        plan.TargetModules.Add("q_proj");
        return plan;
    }
}
