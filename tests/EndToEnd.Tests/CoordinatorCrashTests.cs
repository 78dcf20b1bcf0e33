using Federated.Aggregation.Privacy;
using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Trust;
using Grpc.Core;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// A coordinator process SIGKILLed in the middle of a round and started again on the same state file: the run resumes
/// from its last released round, the ledger is charged once per released round, and clients come back by themselves.
/// </summary>
public sealed class CoordinatorCrashTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-crash-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Serve_KilledDuringMaskedInput_RunResumesFromLastReleasedRoundAndChargesEachReleaseOnce()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), s_clients);
        string pki = federation.Directory;
        string ca = federation.CaPath;
        string baseModel = Path.Combine(_root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 11);
        string stateFile = Path.Combine(_root, "state", "coordinator.db");
        CoordinatorProcess first = await CoordinatorProcess.StartAsync(pki, stateFile, TimeSpan.FromSeconds(90), onLine: Log);
        // The restart binds the port the first process reported, so the clients find it again at the same address.
        Uri address = first.Address;

        // Every client holds in round 2 just before uploading until the coordinator is dead.
        var atRound2Upload = new CountdownEvent(s_clients.Length);
        var killed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, federation.Identity(name), ca, address)
        {
            BeforeStage = async (manifest, stage, ct) =>
            {
                if (manifest.Round.Round == 2 && stage == RoundStage.MaskedInput && !killed.Task.IsCompleted)
                {
                    atRound2Upload.Signal();
                    await killed.Task.WaitAsync(ct);
                }
            },
        })];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(6));
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        string runId;
        double plannedEpsilon;
        try
        {
            using (EdgeIdentity officer = EdgeIdentity.Load(Path.Combine(pki, "officer.pfx"), ca))
            using (var asOfficer = new CoordinatorConnection(address, officer))
            {
                await new AdminService.AdminServiceClient(asOfficer.Channel).SetBudgetAsync(
                    new SetBudgetRequest { Population = "default", Epsilon = 100, Delta = 1e-5 }, asOfficer.Call(CancellationToken.None));
            }
            using (EdgeIdentity engineer = EdgeIdentity.Load(Path.Combine(pki, "engineer.pfx"), ca))
            using (var asEngineer = new CoordinatorConnection(address, engineer))
            {
                var plan = new RunPlan
                {
                    BaseModel = baseModel, LoraRank = 2, Rounds = 2, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
                    ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
                };
                plan.TargetModules.Add("q_proj");
                StartRunResponse started = await new AdminService.AdminServiceClient(asEngineer.Channel).StartRunAsync(
                    new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
                (runId, plannedEpsilon) = (started.RunId, started.PlannedEpsilon);
            }
            Assert.True(atRound2Upload.Wait(TimeSpan.FromMinutes(3), stop.Token), "the clients never reached the upload of round 2");
            first.Kill();
        }
        finally
        {
            first.Dispose();
        }

        // What the dead coordinator left: round 1 released and charged, round 2 begun and never completed.
        using (SqliteConnection db = SqliteStateDatabase.OpenReadOnly(stateFile))
        {
            Assert.Equal([(1, (int)RoundStage.Completed), (2, (int)RoundStage.Manifest)], Rounds(db, runId));
            Assert.Equal([1], LedgerRounds(db, runId));
        }
        killed.SetResult();

        RunStatus final;
        LedgerEntry[] ledger;
        Budget budget;
        using (CoordinatorProcess second = await CoordinatorProcess.StartAsync(pki, stateFile, TimeSpan.FromSeconds(90), port: address.Port, onLine: Log))
        {
            using EdgeIdentity engineer = EdgeIdentity.Load(Path.Combine(pki, "engineer.pfx"), ca);
            using var asEngineer = new CoordinatorConnection(address, engineer);
            var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
            final = await admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, asEngineer.Call(CancellationToken.None));
            while (final.State is RunState.Pending or RunState.Running)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(500), stop.Token);
                final = await admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, asEngineer.Call(CancellationToken.None));
            }
            using EdgeIdentity officer = EdgeIdentity.Load(Path.Combine(pki, "officer.pfx"), ca);
            using var asOfficer = new CoordinatorConnection(address, officer);
            var officerAdmin = new AdminService.AdminServiceClient(asOfficer.Channel);
            ledger = [.. (await officerAdmin.GetLedgerAsync(new GetLedgerRequest { RunId = runId }, asOfficer.Call(CancellationToken.None))).Entries];
            budget = await officerAdmin.GetBudgetAsync(new GetBudgetRequest { Population = "default" }, asOfficer.Call(CancellationToken.None));
            // The ended run still answers: watching it yields its final status, aborting it is refused.
            using (AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = runId }, asEngineer.Call(CancellationToken.None)))
            {
                Assert.Equal(RunState.Completed, Assert.Single(await watch.ResponseStream.ReadAllAsync().ToListAsync()).State);
            }
            var abort = await Assert.ThrowsAsync<RpcException>(() => admin.AbortRunAsync(new AbortRunRequest { RunId = runId, Reason = "late" }, asEngineer.Call(CancellationToken.None)).ResponseAsync);
            Assert.Equal(StatusCode.FailedPrecondition, abort.StatusCode);

            // The released adapter is served whole: the download checks its hash and the coordinator's signature.
            using EdgeIdentity alice = EdgeIdentity.Load(Path.Combine(pki, "alice.pfx"), ca);
            using var asAlice = new CoordinatorConnection(address, alice);
            await asAlice.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            // Every adapter of the run has the same shapes, hence the same size as the one round 1 handed out.
            ulong size = clients[0].Manifests.First(m => m.Round.RunId == runId).GlobalAdapter.SizeBytes;
            byte[] adapter = await AdapterDownload.DownloadAsync(asAlice, new AdapterRef { Sha256 = final.AdapterSha256, SizeBytes = size }, CancellationToken.None);
            Assert.NotEmpty(adapter);
        }
        await stop.CancelAsync();
        await Task.WhenAll(running.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));

        Assert.Equal(RunState.Completed, final.State);
        // Round 2 was interrupted: it is failed, charged nothing, and round 3 released in its place.
        using (SqliteConnection db = SqliteStateDatabase.OpenReadOnly(stateFile))
        {
            Assert.Equal([(1, (int)RoundStage.Completed), (2, (int)RoundStage.Failed), (3, (int)RoundStage.Completed)], Rounds(db, runId));
            Assert.Equal([1, 3], LedgerRounds(db, runId));
            Assert.Contains(AuditStore.ReadRecords(db), r => r.CanonicalJson.Contains("\"round.fail\"", StringComparison.Ordinal)
                && r.CanonicalJson.Contains("coordinator stopped during this round", StringComparison.Ordinal));
        }
        Assert.Equal([1u, 3u], ledger.Select(e => e.Round));
        Assert.All(ledger, e => Assert.Equal(3u, e.Participants));
        // The accountant, independently: replace-one Skellam RDP of the calibrated plan composed over the two released
        // rounds, at the run's delta (1e-6) and, for the population, at the budget's (1e-5).
        double epsilon = ExpectedPrice.Skellam(clients[0].Dimension, 3, 2, 0.5, 2, 1e-6);
        Assert.Equal(epsilon, plannedEpsilon, 1e-9);
        Assert.Equal(epsilon, ledger[^1].EpsilonAfter, 1e-9);
        Assert.Equal(ExpectedPrice.Skellam(clients[0].Dimension, 3, 2, 0.5, 2, 1e-5), budget.EpsilonSpent, 1e-9);
        Assert.Equal(0, budget.EpsilonReserved, 12);
        Assert.Equal(epsilon, final.EpsilonSpent, 1e-9);
        // The resumed round started from round 1's adapter (round 2 released nothing), and every client rejoined it.
        foreach (RandomUpdateClient client in clients)
        {
            Dictionary<uint, string> adapters = client.Manifests.Where(m => m.Round.RunId == runId).ToDictionary(m => m.Round.Round, m => m.GlobalAdapter.Sha256);
            Assert.Equal([1u, 2u, 3u], adapters.Keys.Order());
            Assert.NotEqual(adapters[1], adapters[2]);
            Assert.Equal(adapters[2], adapters[3]);
            Assert.Contains(3u, client.Completed);
        }
        Assert.NotEqual(clients[0].Manifests.Single(m => m.Round.Round == 3).GlobalAdapter.Sha256, final.AdapterSha256);
    }

    [Fact]
    public async Task Host_StoppedGracefullyDuringMaskedInput_RunResumesOnNextStart()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), s_clients);
        string baseModel = Path.Combine(_root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 31);
        var options = new CoordinatorOptions { Pki = federation.Directory, Port = 0, Address = "127.0.0.1", State = Path.Combine(_root, "state.db"), HeartbeatIntervalSeconds = 1 };
        CoordinatorHost first = CoordinatorHost.Create(options, _ => { });
        await first.StartAsync(CancellationToken.None);
        // The second host binds the port the first one got, so the clients find it again at the same address.
        Uri address = first.Address;
        options = new CoordinatorOptions { Pki = options.Pki, Port = address.Port, Address = options.Address, State = options.State, HeartbeatIntervalSeconds = 1 };
        var atRound2Upload = new CountdownEvent(s_clients.Length);
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, federation.Identity(name), federation.CaPath, address)
        {
            BeforeStage = async (manifest, stage, ct) =>
            {
                if (manifest.Round.Round == 2 && stage == RoundStage.MaskedInput && !stopped.Task.IsCompleted)
                {
                    atRound2Upload.Signal();
                    await stopped.Task.WaitAsync(ct);
                }
            },
        })];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        string runId;
        try
        {
            await using (first)
            {
                first.State.Budgets.Set("default", 100, 1e-5, "officer");
                var plan = new RunPlan
                {
                    BaseModel = baseModel, LoraRank = 2, Rounds = 2, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
                    ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
                };
                plan.TargetModules.Add("q_proj");
                runId = first.Services.GetRequiredService<RunOrchestrator>().Start(plan, "engineer").RunId;
                Assert.True(atRound2Upload.Wait(TimeSpan.FromMinutes(2), stop.Token), "the clients never reached the upload of round 2");
            }
            stopped.SetResult();

            await using CoordinatorHost second = CoordinatorHost.Create(options, _ => { });
            await second.StartAsync(CancellationToken.None);
            var orchestrator = second.Services.GetRequiredService<RunOrchestrator>();
            while (orchestrator.Status(runId)!.State is RunState.Pending or RunState.Running)
            {
                await orchestrator.WaitForChangeAsync(runId, stop.Token);
            }

            Assert.Equal(RunState.Completed, orchestrator.Status(runId)!.State);
            Assert.Equal([1, 3], second.State.Ledger.List(runId, null).Select(l => l.Round));
            Assert.Equal(RoundStage.Failed, second.State.Rounds.Stage(runId, 2));
        }
        finally
        {
            stopped.TrySetResult();
            await stop.CancelAsync();
            await Task.WhenAll(running.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }

    private static List<(int Round, int Stage)> Rounds(SqliteConnection db, string runId)
    {
        using SqliteCommand command = db.CreateCommand();
        command.CommandText = "SELECT round, stage FROM rounds WHERE run_id = $run ORDER BY round";
        command.Parameters.AddWithValue("$run", runId);
        using SqliteDataReader reader = command.ExecuteReader();
        var rounds = new List<(int, int)>();
        while (reader.Read())
        {
            rounds.Add((reader.GetInt32(0), reader.GetInt32(1)));
        }
        return rounds;
    }

    private static List<int> LedgerRounds(SqliteConnection db, string runId)
    {
        using SqliteCommand command = db.CreateCommand();
        command.CommandText = "SELECT round FROM ledger WHERE run_id = $run ORDER BY sequence";
        command.Parameters.AddWithValue("$run", runId);
        using SqliteDataReader reader = command.ExecuteReader();
        var rounds = new List<int>();
        while (reader.Read())
        {
            rounds.Add(reader.GetInt32(0));
        }
        return rounds;
    }

    private void Log(string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // The test already ended.
        }
    }
}
