using System.Collections.Concurrent;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>A run whose clients vanish mid-round: a round below the threshold releases nothing and charges nothing, one at or above it charges for the survivors.</summary>
public sealed class RunOrchestratorDropoutTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    [Fact]
    public async Task Run_DropoutsBelowThenAtThreshold_FailedRoundUnchargedAndSurvivorsCharged()
    {
        string baseModel = Path.Combine(coordinator.Root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 13);
        coordinator.Host.State.Budgets.Set("default", 100, 1e-5, "officer");
        var orchestrator = coordinator.Host.Services.GetRequiredService<RunOrchestrator>();
        orchestrator.StageTimeout = TimeSpan.FromSeconds(6);
        // The rounds' deadlines run on a fake clock: each stall ends on its stage deadline as soon as the round waits
        // only for the vanished clients and the watcher saw the stall, not after seconds of real time.
        FakeTimeProvider clock = RoundClock.Create();
        orchestrator.RoundClock = clock;
        // Round 1: bob and carol vanish before sharing keys (1 survivor < t = 2). Round 2: carol vanishes before
        // uploading (2 survivors = t). Round 3: everyone stays.
        Func<RoundManifest, RoundStage, CancellationToken, Task> Vanish(string name) => (manifest, stage, _) =>
            (manifest.Round.Round, stage, name) is (1, RoundStage.ShareKeys, "bob" or "carol") or (2, RoundStage.MaskedInput, "carol")
                ? throw new DroppedOutException($"{name} vanished before {stage} of round {manifest.Round.Round}")
                : Task.CompletedTask;
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, coordinator.Address)
        {
            BeforeStage = Vanish(name),
        })];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        RunStatus final;
        List<RunStatus> statuses;
        StartRunResponse started;
        try
        {
            using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
            var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
            var plan = new RunPlan
            {
                BaseModel = baseModel, LoraRank = 2, Rounds = 2, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
                ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
            };
            plan.TargetModules.Add("q_proj");
            started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
            using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, new CallOptions(cancellationToken: stop.Token));
            var seen = new ConcurrentQueue<RunStatus>();
            Task<List<RunStatus>> watching = Task.Run(async () =>
            {
                var all = new List<RunStatus>();
                await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(stop.Token))
                {
                    all.Add(status);
                    seen.Enqueue(status);
                }
                return all;
            });

            SecAggRound round1 = await RoundClock.FindAsync(coordinator.Host.Rounds, started.RunId, 1);
            await RoundClock.UntilAsync(() => seen.Any(s => (s.CurrentRound, s.Stage, s.Reported) == (1u, RoundStage.ShareKeys, 1u)), "the watcher seeing round 1 stall in SHARE_KEYS");
            await RoundClock.ExpireStageAsync(round1, clock, RoundStage.ShareKeys, "bob", "carol");
            SecAggRound round2 = await RoundClock.FindAsync(coordinator.Host.Rounds, started.RunId, 2);
            await RoundClock.UntilAsync(() => seen.Any(s => (s.CurrentRound, s.Stage, s.Reported) == (2u, RoundStage.MaskedInput, 2u)), "the watcher seeing round 2 stall in MASKED_INPUT");
            await RoundClock.ExpireStageAsync(round2, clock, RoundStage.MaskedInput, "carol");
            statuses = await watching;
            final = statuses[^1];
        }
        finally
        {
            orchestrator.RoundClock = null;
            await stop.CancelAsync();
            await Task.WhenAll(running.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        }

        Assert.Equal(RunState.Completed, final.State);
        // Watchers saw each stall: round 1 waiting in SHARE_KEYS with alice's report only, round 2 in MASKED_INPUT with two uploads.
        Assert.Contains(statuses, s => (s.CurrentRound, s.Stage, s.Reported, s.Selected) == (1u, RoundStage.ShareKeys, 1u, 3u));
        Assert.Contains(statuses, s => (s.CurrentRound, s.Stage, s.Reported) == (2u, RoundStage.MaskedInput, 2u));
        Assert.Equal((3u, RoundStage.Completed), (final.CurrentRound, final.Stage));
        Assert.Equal(RoundStage.Failed, coordinator.Host.State.Rounds.Stage(started.RunId, 1));
        IReadOnlyList<LedgerRecord> ledger = coordinator.Host.State.Ledger.List(started.RunId, null);
        Assert.Equal([(2, 2), (3, 3)], ledger.Select(l => (l.Round, l.Participants)));
        // Two released rounds (the failed one charged nothing), at the run's delta and, for the population, the budget's.
        Assert.Equal(ExpectedPrice.Skellam(clients[0].Dimension, 3, 2, 0.5, 2, 1e-6), ledger[^1].EpsilonAfter, 1e-9);
        Assert.Equal(ExpectedPrice.Skellam(clients[0].Dimension, 3, 2, 0.5, 2, 1e-5), coordinator.Host.State.Budgets.Get("default")!.EpsilonSpent, 1e-9);
        // The failed round moved nothing: round 2 started from the same global adapter as round 1.
        Dictionary<uint, string> adapters = clients[0].Manifests.Where(m => m.Round.RunId == started.RunId).ToDictionary(m => m.Round.Round, m => m.GlobalAdapter.Sha256);
        Assert.Equal(adapters[1], adapters[2]);
        Assert.NotEqual(adapters[2], adapters[3]);
        Assert.DoesNotContain(1u, clients[0].Completed);
    }
}
