using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `edge-client run --coordinator DEAD,LIVE` as a real child process against a real coordinator: the dead address (a
/// closed loopback port) is tried first, the client moves on to the live one, says it switched, and completes a round
/// there with an in-process second participant.
/// </summary>
public sealed class CoordinatorListTests(CoordinatorFixture coordinator, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Run_FirstCoordinatorDead_SwitchesToTheSecondAndCompletesARound()
    {
        string model = Path.Combine(coordinator.Root, "tiny-list");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 7);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        string home = Path.Combine(coordinator.Root, "home-list-alice");
        Directory.CreateDirectory(home);
        File.Copy(coordinator.Identity("alice"), Path.Combine(home, "alice.pfx"));
        File.WriteAllText(Path.Combine(home, "policy.json"), """
            {"delta": 1e-5, "max_epsilon_per_run": 100, "max_epsilon_lifetime": 1000, "min_noise_multiplier": 0.2,
             "allowed_mechanisms": ["distributed_skellam"], "allowed_target_modules": ["q_proj", "v_proj"], "max_rank": 8, "max_rounds_per_day": 10}
            """);
        string data = Path.Combine(home, "data.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"text\": \"alice writes note number {i}\"}}"));
        string dead = $"https://127.0.0.1:{ClosedPort()}";
        string live = $"https://127.0.0.1:{coordinator.Address.Port}";

        // Every line, in order (the process's own tail keeps only the last few).
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        string Said() => string.Join('\n', lines);
        using DotnetProcess alice = DotnetProcess.Start(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"),
            ["run", "--coordinator", $"{dead},{live}", "--identity", Path.Combine(home, "alice.pfx"), "--ca", coordinator.CaPath,
                "--data", data, "--model", model, "--device", "cpu"], line =>
            {
                Log(line);
                lines.Enqueue(line);
            });
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        // The second participant talks to the live coordinator directly: the round needs two.
        var bob = new RandomUpdateClient("bob", coordinator.Identity("bob"), coordinator.CaPath, coordinator.Address);
        Task bobRunning = Task.Run(() => bob.RunAsync(stop.Token));
        try
        {
            await alice.WaitForLineAsync(l => l.Contains("registered as alice (client)", StringComparison.Ordinal), TimeSpan.FromSeconds(90));
            // Before registering, the dead address was tried and given up on, and the switch was said in one line.
            string before = Said();
            Assert.Contains($"coordinator {dead} unavailable (", before, StringComparison.Ordinal);
            Assert.Contains($"trying {live} in ", before, StringComparison.Ordinal);
            Assert.Contains($"edge-client: coordinator {live} serves rounds; switched from {dead}", before, StringComparison.Ordinal);

            using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, engineer);
            var admin = new AdminService.AdminServiceClient(connection.Channel);
            var plan = new RunPlan
            {
                BaseModel = model, LoraRank = 2, Rounds = 1, ClientsPerRound = 2, LocalSteps = 2, LearningRate = 0.01,
                ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6,
            };
            plan.TargetModules.Add("q_proj");
            StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, connection.Call(CancellationToken.None));
            RunStatus? last = null;
            using (AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, new CallOptions(cancellationToken: stop.Token)))
            {
                await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(stop.Token))
                {
                    last = status;
                }
            }

            Assert.Equal(RunState.Completed, last?.State);
            Assert.Equal(2, Assert.Single(coordinator.Host.State.Ledger.List(started.RunId, null)).Participants);
            await alice.WaitForLineAsync(l => l.Contains("uploaded", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            string all = Said();
            Assert.Contains($"invited to round 1 of run {started.RunId}", all, StringComparison.Ordinal);
            // Once it served, the client stayed with the live coordinator: the dead one was tried only before the switch.
            string afterSwitch = all[all.IndexOf("serves rounds; switched from", StringComparison.Ordinal)..];
            Assert.DoesNotContain(dead, afterSwitch[afterSwitch.IndexOf('\n', StringComparison.Ordinal)..], StringComparison.Ordinal);

            await alice.InterruptAsync();
            Assert.Equal(130, await alice.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            await stop.CancelAsync();
            await bobRunning.ContinueWith(_ => { }, TaskScheduler.Default);
        }
    }

    private static int ClosedPort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    private void Log(string? line)
    {
        if (line is not null)
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
}
