using System.Collections.Concurrent;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Cli;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Trust;
using Grpc.Core;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Six `edge-client run` processes in one round; two are SIGKILLed right before they would send a stage's message (the
/// test-only hold hook tells the test when): carol before her masked input (her pairwise masks are removed with the
/// others' shares of her mask key) and dave before unmasking (his input is in the sum, his self-mask removed with the
/// others' shares of his seed). With t = 4 (above half of the six, which every client checks) the round completes and
/// the ledger charges it for the five whose masked inputs arrived. Kills at the first two stages are covered in process
/// (SecAggDropoutTests): with t > k/2, six processes cannot lose four.
/// </summary>
public sealed class EdgeClientDropoutTests(CoordinatorFixture coordinator, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    private static readonly (string Name, string? Hold)[] s_clients =
        [("alice", null), ("bob", null), ("carol", "masked_input"), ("dave", "unmask"), ("erin", null), ("frank", null)];

    [Fact]
    public async Task Run_ProcessesKilledBeforeUploadAndBeforeUnmask_RoundCompletesWithTheFiveWhoseInputsArrived()
    {
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            pki.IssueIdentity(coordinator.Pki, "frank", FederationRole.Client, password: null);
        }
        string model = Path.Combine(coordinator.Root, "tiny");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 29);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        // The round's deadlines run on a fake clock: a stage someone vanished in closes as soon as it waits only for the
        // killed client, instead of after its real deadline. The 18 s stage keeps the processes' own call deadlines generous.
        var orchestrator = coordinator.Host.Services.GetRequiredService<RunOrchestrator>();
        orchestrator.StageTimeout = TimeSpan.FromSeconds(18);
        FakeTimeProvider clock = RoundClock.Create();
        orchestrator.RoundClock = clock;
        var killed = new ConcurrentDictionary<string, string>(StringComparer.Ordinal);
        var processes = new List<(string Name, DotnetProcess Process)>();
        try
        {
            foreach ((string name, string? hold) in s_clients)
            {
                processes.Add((name, Start(name, hold, model, killed)));
            }
            // Selection takes the clients available now: wait until all six have registered and heartbeat.
            using var ready = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            while (coordinator.Host.State.Clients.List(TimeSpan.FromSeconds(3)).Count(c => s_clients.Any(s => s.Name == c.ClientId) && c.Available) < s_clients.Length)
            {
                await Task.Delay(200, ready.Token);
            }
            using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, engineer);
            var admin = new AdminService.AdminServiceClient(connection.Channel);
            var plan = new RunPlan
            {
                BaseModel = model, LoraRank = 2, Rounds = 1, ClientsPerRound = 6, MinSurvivors = 4, LocalSteps = 1, LearningRate = 0.01,
                ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6,
            };
            plan.TargetModules.Add("q_proj");
            plan.TargetModules.Add("v_proj");
            StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, connection.Call(CancellationToken.None));
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(4));
            using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, new CallOptions(cancellationToken: timeout.Token));
            Task<List<RunStatus>> watching = Task.Run(() => watch.ResponseStream.ReadAllAsync(timeout.Token).ToListAsync(timeout.Token).AsTask());

            SecAggRound round = await RoundClock.FindAsync(coordinator.Host.Rounds, started.RunId, 1);
            // carol was killed before her masked input; dave, held before unmasking, neither signs the survivor set nor unmasks.
            await RoundClock.ExpireStageAsync(round, clock, RoundStage.MaskedInput, "carol");
            await RoundClock.ExpireConsistencyCheckAsync(round, clock, signers: 4);
            await RoundClock.ExpireStageAsync(round, clock, RoundStage.Unmask, "dave");
            RunStatus final = (await watching)[^1];

            Assert.Equal(RunState.Completed, final.State);
            Assert.Equal(new Dictionary<string, string>
            {
                ["carol"] = "MaskedInput",
                ["dave"] = "Unmask",
            }, killed.ToDictionary(StringComparer.Ordinal));
            Assert.All(processes.Where(p => killed.ContainsKey(p.Name)), p => Assert.True(p.Process.HasExited, $"{p.Name} still runs"));
            LedgerRecord charge = Assert.Single(coordinator.Host.State.Ledger.List(started.RunId, null));
            Assert.Equal(5, charge.Participants);
            // dave was killed after his upload: his input is in the sum and his masks were removed with the others' shares.
            Assert.Equal(new Dictionary<string, string>
            {
                ["alice"] = "uploaded", ["bob"] = "uploaded", ["carol"] = "dropped", ["dave"] = "uploaded", ["erin"] = "uploaded", ["frank"] = "uploaded",
            }, Participants(started.RunId));
        }
        finally
        {
            orchestrator.RoundClock = null;
            foreach ((_, DotnetProcess process) in processes)
            {
                process.Dispose();
            }
        }
    }

    private Dictionary<string, string> Participants(string runId)
    {
        using SqliteConnection db = SqliteStateDatabase.OpenReadOnly(Path.Combine(coordinator.Root, "state.db"));
        using SqliteCommand command = db.CreateCommand();
        command.CommandText = "SELECT client_id, status FROM participants WHERE run_id = $run AND round = 1";
        command.Parameters.AddWithValue("$run", runId);
        using SqliteDataReader reader = command.ExecuteReader();
        var statuses = new Dictionary<string, string>(StringComparer.Ordinal);
        while (reader.Read())
        {
            statuses[reader.GetString(0)] = reader.GetString(1);
        }
        return statuses;
    }

    private DotnetProcess Start(string name, string? hold, string model, ConcurrentDictionary<string, string> killed)
    {
        string home = Path.Combine(coordinator.Root, "home-" + name);
        Directory.CreateDirectory(home);
        File.Copy(coordinator.Identity(name), Path.Combine(home, name + ".pfx"));
        File.WriteAllText(Path.Combine(home, "policy.json"), """
            {"delta": 1e-5, "max_epsilon_per_run": 100, "max_epsilon_lifetime": 1000, "min_noise_multiplier": 0.2,
             "allowed_mechanisms": ["distributed_skellam"], "allowed_target_modules": ["q_proj", "v_proj"], "max_rank": 8, "max_rounds_per_day": 10}
            """);
        string data = Path.Combine(home, "data.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"text\": \"{name} writes note number {i}\"}}"));
        DotnetProcess process = DotnetProcess.Start(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"),
            ["run", "--coordinator", coordinator.Address.ToString(), "--identity", Path.Combine(home, name + ".pfx"), "--ca", coordinator.CaPath, "--data", data, "--model", model, "--device", "cpu"],
            line => Log($"[{name}] {line}"),
            hold is null ? null : new Dictionary<string, string?> { [RunCommand.HoldBeforeStageVariable] = hold });
        if (hold is not null)
        {
            _ = KillWhenHeldAsync(name, process, killed);
        }
        return process;
    }

    /// <summary>SIGKILL once the test-only hook says the client holds: it vanishes with its stage message unsent, as a crashed machine would.</summary>
    private static async Task KillWhenHeldAsync(string name, DotnetProcess process, ConcurrentDictionary<string, string> killed)
    {
        const string marker = "test hook: holding before ";
        string line = await process.WaitForLineAsync(l => l.Contains(marker, StringComparison.Ordinal), TimeSpan.FromMinutes(4));
        killed.TryAdd(name, line[(line.IndexOf(marker, StringComparison.Ordinal) + marker.Length)..].Trim());
        process.Kill();
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
