using Federated.Coordinator.State;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `edge-client run` as real child processes: three clients complete a round (one reporting with --json), then SIGTERM
/// and Ctrl+C (SIGINT) end them.
/// </summary>
public sealed class EdgeClientRunTests(CoordinatorFixture coordinator, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    [Fact]
    public async Task Run_ThreeProcesses_RoundCompletesAndCtrlCExits130()
    {
        string model = Path.Combine(coordinator.Root, "tiny");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 5);
        coordinator.Host.State.Budgets.Set("default", 1000, 1e-5, "officer");
        var processes = new List<DotnetProcess>();
        int metricsPort = FreePort();
        // The first client runs as a Type=notify service would: READY=1 once registered.
        using NotifySocket notify = NotifySocket.Create(Path.Combine(coordinator.Root, "notify-" + Guid.NewGuid().ToString("N")[..8] + ".sock"));
        // carol reports with --json: one object per line on stdout.
        var carolJson = new System.Collections.Concurrent.ConcurrentQueue<string>();
        try
        {
            foreach (string name in s_clients)
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
                string[] args = ["run", "--coordinator", coordinator.Address.ToString(), "--identity", Path.Combine(home, name + ".pfx"),
                    "--ca", coordinator.CaPath, "--data", data, "--model", model, "--device", "cpu"];
                if (name == s_clients[0])
                {
                    // alice serves metrics and runs as a Type=notify service would.
                    processes.Add(DotnetProcess.Start(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"),
                        [.. args, "--metrics-port", metricsPort.ToString(System.Globalization.CultureInfo.InvariantCulture)], Log,
                        new Dictionary<string, string?> { ["NOTIFY_SOCKET"] = notify.Path }));
                }
                else
                {
                    processes.Add(name == "carol"
                        ? DotnetProcess.Start(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"), [.. args, "--json"], line =>
                        {
                            Log(line);
                            if (line?.StartsWith('{') == true)
                            {
                                carolJson.Enqueue(line);
                            }
                        })
                        : Start(args));
                }
            }
            using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, engineer);
            var admin = new AdminService.AdminServiceClient(connection.Channel);
            var plan = new RunPlan
            {
                BaseModel = model, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, LocalSteps = 5, LearningRate = 0.01,
                ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6,
            };
            plan.TargetModules.Add("q_proj");
            plan.TargetModules.Add("v_proj");
            StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, connection.Call(CancellationToken.None));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            RunStatus? last = null;
            using (AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, new CallOptions(cancellationToken: timeout.Token)))
            {
                await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(timeout.Token))
                {
                    last = status;
                }
            }

            Assert.Equal(RunState.Completed, last?.State);
            IReadOnlyList<LedgerRecord> ledger = coordinator.Host.State.Ledger.List(started.RunId, null);
            Assert.Equal(3, Assert.Single(ledger).Participants);
            foreach (string name in s_clients)
            {
                Assert.True(File.Exists(Path.Combine(coordinator.Root, "home-" + name, "edge-ledger.db")), $"{name} has no local ledger");
            }
            // Each process said what it was doing, one line per state change (its own stderr, never data).
            foreach ((DotnetProcess process, string name) in processes.Zip(s_clients).Where(p => p.Second != "carol"))
            {
                // The round can complete at the coordinator a moment before a client prints its last line.
                await process.WaitForLineAsync(l => l.Contains("uploaded", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
                foreach (string expected in new[] { $"registered as {name} (client)", "invited to round 1 of run", "training step 5/5, loss", "charged the local ledger" })
                {
                    Assert.True(process.Tail.Contains(expected, StringComparison.Ordinal), $"{name} did not say '{expected}':\n{process.Tail}");
                }
            }
            await notify.ReceiveAsync(m => m.StartsWith($"STATUS=registered as {s_clients[0]} (client)", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            await notify.ReceiveAsync(m => m == "READY=1", TimeSpan.FromSeconds(30));
            await ScrapeEdgeMetricsAsync(metricsPort, Path.Combine(coordinator.Root, "home-" + s_clients[0], "edge-ledger.db"));
            // carol's --json: every state change as one object, in order, with its fields.
            await processes[2].WaitForLineAsync(l => l.Contains("\"event\":\"round_done\"", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
            List<System.Text.Json.JsonElement> events = [.. carolJson.Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)];
            string[] kinds = [.. events.Select(e => e.GetProperty("event").GetString()!).Where(k => k != "retrying")];
            Assert.Equal(["connecting", "registered", "waiting", "invited", "training"], kinds.Take(5));
            Assert.Equal(["charged", "uploading", "round_done"], kinds.SkipWhile(k => k != "charged").Take(3));
            System.Text.Json.JsonElement registered = events.First(e => e.GetProperty("event").GetString() == "registered");
            Assert.Equal(("carol", "client"), (registered.GetProperty("name").GetString(), registered.GetProperty("role").GetString()));
            System.Text.Json.JsonElement lastStep = events.Last(e => e.GetProperty("event").GetString() == "training");
            Assert.Equal((5, 5), (lastStep.GetProperty("step").GetInt32(), lastStep.GetProperty("steps").GetInt32()));
            Assert.True(lastStep.GetProperty("loss").GetDouble() > 0);
            System.Text.Json.JsonElement charged = events.First(e => e.GetProperty("event").GetString() == "charged");
            Assert.Equal(started.RunId, charged.GetProperty("run_id").GetString());
            Assert.True(charged.GetProperty("run_epsilon").GetDouble() > 0);
            Assert.Equal(1e-5, charged.GetProperty("delta").GetDouble());

            // Ctrl+C for two of them (exit 130), SIGTERM for the third, as a service manager stops it: a clean stop
            // with one line and exit 0.
            await processes[0].TerminateAsync();
            foreach (DotnetProcess process in processes.Skip(1))
            {
                await process.InterruptAsync();
            }
            Assert.Equal(0, await processes[0].WaitForExitAsync(TimeSpan.FromSeconds(30)));
            Assert.Contains("edge-client: stopped (SIGTERM)", processes[0].Tail, StringComparison.Ordinal);
            foreach (DotnetProcess process in processes.Skip(1))
            {
                Assert.Equal(130, await process.WaitForExitAsync(TimeSpan.FromSeconds(30)));
            }
            // The final object of a --json run.
            Assert.Equal("stopped", System.Text.Json.JsonDocument.Parse(carolJson.Last()).RootElement.GetProperty("event").GetString());
        }
        finally
        {
            foreach (DotnetProcess process in processes)
            {
                process.Dispose();
            }
        }
    }

    [Fact]
    public async Task Run_WrongCa_StopsWithExit1AndOneLineSayingWhatToFix()
    {
        string model = Path.Combine(coordinator.Root, "tiny-ca");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 6);
        string home = Path.Combine(coordinator.Root, "home-wrong-ca");
        Directory.CreateDirectory(home);
        // Mallory of another federation, with that federation's CA: a consistent identity whose --ca the real
        // coordinator's certificate does not chain to (a wrong --coordinator or --ca).
        File.Copy(Path.Combine(coordinator.RoguePki, "mallory.pfx"), Path.Combine(home, "alice.pfx"));
        File.WriteAllText(Path.Combine(home, "policy.json"), """
            {"delta": 1e-5, "max_epsilon_per_run": 100, "max_epsilon_lifetime": 1000, "min_noise_multiplier": 0.2,
             "allowed_mechanisms": ["distributed_skellam"], "allowed_target_modules": ["q_proj"], "max_rank": 8, "max_rounds_per_day": 10}
            """);
        string data = Path.Combine(home, "data.jsonl");
        // One malformed line, skipped with --skip-malformed (as train does) and reported on stderr.
        File.WriteAllLines(data, [.. Enumerable.Range(0, 4).Select(i => $"{{\"text\": \"alice writes note number {i}\"}}"), "{\"text\": "]);
        string foreignCa = Path.Combine(coordinator.RoguePki, Federated.Coordinator.Pki.FederationPki.CaCertificateFile);

        (int code, _, string stderr) = await DotnetProcess.RunAsync(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"),
            ["run", "--coordinator", coordinator.Address.ToString(), "--identity", Path.Combine(home, "alice.pfx"), "--ca", foreignCa,
                "--data", data, "--model", model, "--device", "cpu", "--skip-malformed"], TimeSpan.FromSeconds(120));
        Log(stderr);

        Assert.Equal(1, code);
        Assert.Matches($@"skipped {System.Text.RegularExpressions.Regex.Escape(data)}:5:\d+: not valid JSON", stderr);
        string last = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)[^1];
        Assert.Contains("presented a certificate this client refuses", last, StringComparison.Ordinal);
        Assert.Contains("check --ca", last, StringComparison.Ordinal);
        Assert.DoesNotContain(" at Federated.", stderr, StringComparison.Ordinal);
    }

    // The edge client's own build output: this test folder resolves some assemblies from the ASP.NET shared framework
    // (the coordinator's), which a standalone edge-client does not use.
    /// <summary>
    /// `edge-client run --metrics-port`: the first client's scrape endpoint, on loopback, counts the round it joined and
    /// its training steps, and its epsilon gauge is what its own ledger says.
    /// </summary>
    private static async Task ScrapeEdgeMetricsAsync(int port, string ledgerPath)
    {
        using var http = new HttpClient();
        // The counters move right after the "uploaded" line the test waited for; a few scrapes bridge that moment.
        string text = "";
        for (int attempt = 0; attempt < 50 && !text.Contains("federated_round_outcome=\"joined\"", StringComparison.Ordinal); attempt++)
        {
            if (attempt > 0)
            {
                await Task.Delay(200);
            }
            text = await http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/metrics"));
        }
        var samples = text.Split('\n').Where(l => l.Length > 0 && l[0] != '#')
            .Select(l => l.Split(' ')).ToDictionary(p => p[0], p => double.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture), StringComparer.Ordinal);
        double Sample(string name, string label = "") =>
            Assert.Single(samples, s => (s.Key == name || s.Key.StartsWith(name + "{", StringComparison.Ordinal)) && s.Key.Contains(label, StringComparison.Ordinal)).Value;
        Assert.Equal(1, Sample("federated_edge_rounds_total", "federated_round_outcome=\"joined\""));
        // Five local steps; the first (warm-up) is not timed.
        Assert.Equal(4, Sample("federated_edge_training_step_duration_seconds_count"));
        Assert.True(Sample("federated_edge_training_tokens_total") > 0);
        Assert.True(Sample("federated_edge_upload_bytes_total") > 0);
        using var ledger = Federated.EdgeClient.Policy.LocalPrivacyLedger.Open(ledgerPath);
        double epsilon = ledger.Spent(1e-5).Epsilon;
        Assert.True(epsilon > 0);
        Assert.Equal(epsilon, Sample("federated_edge_privacy_epsilon"), 1e-9);
        Assert.DoesNotContain(samples.Keys, k => k.Contains("loss", StringComparison.OrdinalIgnoreCase));
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    private DotnetProcess Start(params string[] args) => DotnetProcess.Start(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"), args, Log);

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
