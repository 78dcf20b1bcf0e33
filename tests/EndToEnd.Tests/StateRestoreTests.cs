using Federated.Aggregation.Privacy;
using Federated.Coordinator;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using TorchSharp;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The mundane lie: an operator restores the coordinator's state from an earlier backup. The restored coordinator
/// re-runs round numbers the edges already paid for; real edge workers (their own policy gate and SQLite ledger)
/// decline each such round naming the last round they were charged for, the coordinator numbers the run past it, and
/// the run completes with no edge uploading twice for one (run, round).
/// </summary>
public sealed class StateRestoreTests(ITestOutputHelper output) : IDisposable
{
    private static readonly Dictionary<string, string[]> s_text = new(StringComparer.Ordinal)
    {
        ["alice"] = ["the cat sat on the mat", "the cat ate the fish"],
        ["bob"] = ["the dog ran in the park", "a dog digs in the yard"],
        ["carol"] = ["the bird flew over the tree", "a bird sings at dawn"],
    };

    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-restore-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Restore_StateFromAnEarlierBackup_EdgesDeclineReplayedRoundsAndTheRunCompletesPastThem()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), [.. s_text.Keys]);
        string model = Path.Combine(_root, "tiny");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 17);
        string stateFile = Path.Combine(_root, "state", "coordinator.db");
        string backup = Path.Combine(_root, "backup.db");
        var options = new CoordinatorOptions { Pki = federation.Directory, Port = 0, Address = "127.0.0.1", State = stateFile, HeartbeatIntervalSeconds = 1 };
        CoordinatorHost first = CoordinatorHost.Create(options, _ => { });
        await first.StartAsync(CancellationToken.None);
        Uri address = first.Address;
        options = new CoordinatorOptions { Pki = options.Pki, Port = address.Port, Address = options.Address, State = stateFile, HeartbeatIntervalSeconds = 1 };

        string policyPath = WritePolicy();
        var results = new List<(string Client, RoundWorkResult Result)>();
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        Task[] clients = [.. s_text.Keys.Select(name => Task.Run(() => ClientAsync(federation, name, model, address, policyPath, results, stop.Token)))];
        string runId;
        const double z = 0.5;
        try
        {
            await using (first)
            {
                first.State.Budgets.Set("default", 1000, 1e-5, "officer");
                var plan = new RunPlan
                {
                    BaseModel = model, LoraRank = 2, Rounds = 3, ClientsPerRound = 3, MinSurvivors = 2, LocalSteps = 1, LearningRate = 0.01,
                    ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = z, Delta = 1e-6,
                };
                plan.TargetModules.Add("q_proj");
                var orchestrator = first.Services.GetRequiredService<RunOrchestrator>();
                runId = orchestrator.Start(plan, "engineer").RunId;
                // The backup: a consistent copy of the live state once round 1 was released (the operator's nightly copy).
                while (first.State.Ledger.List(runId, null).Count < 1)
                {
                    await orchestrator.WaitForChangeAsync(runId, stop.Token);
                }
                using (var source = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = stateFile, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString()))
                {
                    source.Open();
                    using SqliteCommand vacuum = source.CreateCommand();
                    vacuum.CommandText = "VACUUM INTO $path";
                    vacuum.Parameters.AddWithValue("$path", backup);
                    vacuum.ExecuteNonQuery();
                }
                while (orchestrator.Status(runId)!.State is RunState.Pending or RunState.Running)
                {
                    await orchestrator.WaitForChangeAsync(runId, stop.Token);
                }
                Assert.Equal(RunState.Completed, orchestrator.Status(runId)!.State);
                Assert.Equal([1, 2, 3], first.State.Ledger.List(runId, null).Select(l => l.Round));
            }

            // The restore: yesterday's state file in place of today's, and the coordinator started on it.
            foreach (string file in Directory.GetFiles(Path.GetDirectoryName(stateFile)!, Path.GetFileName(stateFile) + "*"))
            {
                File.Delete(file);
            }
            File.Copy(backup, stateFile);
            await using CoordinatorHost second = CoordinatorHost.Create(options, _ => { });
            await second.StartAsync(CancellationToken.None);
            var resumed = second.Services.GetRequiredService<RunOrchestrator>();
            Assert.Equal([1], second.State.Ledger.List(runId, null).Select(l => l.Round));
            while (resumed.Status(runId)!.State is RunState.Pending or RunState.Running)
            {
                await resumed.WaitForChangeAsync(runId, stop.Token);
            }

            Assert.Equal(RunState.Completed, resumed.Status(runId)!.State);
            // The restored coordinator released two more rounds, numbered after the edges' last charged round (3).
            IReadOnlyList<LedgerRecord> charged = second.State.Ledger.List(runId, null);
            Assert.Equal([1, 4, 5], charged.Select(l => l.Round));
            Assert.All(charged, l => Assert.Equal(3, l.Participants));
            IReadOnlyList<Federated.Coordinator.Audit.AuditRecord> audit = second.State.Audit.Read(1, 100_000).Entries;
            Assert.Contains(audit, e => e.CanonicalJson.Contains("\"rule\":\"replayed_round\"", StringComparison.Ordinal)
                && e.CanonicalJson.Contains("\"reason\":\"ReplayedRound\"", StringComparison.Ordinal));
            Assert.Equal(ExpectedPrice.Skellam(Dimension(), 3, 2, z, 3, 1e-6), resumed.Status(runId)!.EpsilonSpent, 9);

            // The run can complete on the coordinator a moment before each edge's worker returns from round 5's unmask
            // stage: let every worker finish that round before the clients are stopped.
            while (!stop.IsCancellationRequested)
            {
                lock (results)
                {
                    if (s_text.Keys.All(name => results.Any(r => r.Client == name && r.Result.RunId == runId && r.Result.Round == 5)))
                    {
                        break;
                    }
                }
                await Task.Delay(TimeSpan.FromMilliseconds(50), stop.Token);
            }
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        }

        // The edges' side: one upload per (run, round) each, five charged rounds, and the replays declined by rule.
        foreach (string name in s_text.Keys)
        {
            RoundWorkResult[] mine = [.. results.Where(r => r.Client == name && r.Result.RunId == runId).Select(r => r.Result)];
            Assert.Equal([1u, 2u, 3u, 4u, 5u], mine.Where(r => r.Participated).Select(r => r.Round).Order());
            Assert.Contains(mine, r => !r.Participated);
            Assert.All(mine.Where(r => !r.Participated), r =>
            {
                Assert.Equal(LocalPolicyGate.ReplayedRoundRule, r.DeclinedRule);
                Assert.InRange(r.Round, 2u, 3u);
            });
            using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath(name));
            Assert.Equal([1L, 2L, 3L, 4L, 5L], ledger.Charges.Select(c => c.Round));
            // What the data really released: five rounds, more than the restored coordinator's three. The edge's ledger is the truth.
            Assert.Equal(ExpectedPrice.Skellam(ledger.Charges[0].Plan!.Dimension, 3, 2, z, 5, 1e-6), ledger.Spent(1e-6, runId).Epsilon, 9);
        }

        int Dimension()
        {
            using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath("alice"));
            return ledger.Charges[0].Plan!.Dimension;
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

    private string LedgerPath(string name) => Path.Combine(_root, name + "-" + LocalPrivacyLedger.FileName);

    // One edge machine: its own ledger and gate for its whole life; a new connection (and worker) whenever the coordinator goes away.
    private async Task ClientAsync(TestFederation federation, string name, string model, Uri address, string policyPath,
        List<(string, RoundWorkResult)> results, CancellationToken cancellationToken)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(federation.Identity(name), federation.CaPath);
        using LlamaForCausalLM local = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath(name));
        var gate = new LocalPolicyGate(LocalPolicy.Load(policyPath), ledger, TimeProvider.System);
        IReadOnlyList<TokenBatch> batches = Batches(model, name);
        while (!cancellationToken.IsCancellationRequested)
        {
            using var connection = new CoordinatorConnection(address, identity);
            var worker = new EdgeRoundWorker(connection, name, local, batches, gate) { Report = e => Log($"{name}: {e.Text}") };
            try
            {
                await new EdgeSession(connection, new RegisterRequest { ClientVersion = "test", Device = "cpu" }).RunAsync(async (invitation, ct) =>
                {
                    try
                    {
                        RoundWorkResult result = await worker.HandleAsync(invitation, ct);
                        lock (results)
                        {
                            results.Add((name, result));
                        }
                    }
                    catch (RpcException ex) when (!ct.IsCancellationRequested)
                    {
                        Log($"{name}: round {invitation.Round} ended without this client: {ex.Status.Detail}");
                    }
                }, cancellationToken);
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested)
            {
                // The coordinator went away: come back as edge-client run does.
                await Task.Delay(TimeSpan.FromMilliseconds(300), CancellationToken.None);
            }
        }
    }

    private static IReadOnlyList<TokenBatch> Batches(string model, string name)
    {
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(model);
        JsonlDataset set = JsonlDataset.Parse(s_text[name].Select(t => System.Text.Json.JsonSerializer.Serialize(new { text = t })), name, tokenizer, new DatasetOptions { MaxLength = 32 });
        return TokenBatcher.Batches(set.Examples, 2, tokenizer.PadId, shuffleSeed: 1);
    }

    private string WritePolicy()
    {
        string path = Path.Combine(_root, LocalPolicy.FileName);
        File.WriteAllText(path, """
            {
              "delta": 1e-6,
              "max_epsilon_per_run": 100,
              "max_epsilon_lifetime": 1000,
              "min_noise_multiplier": 0.1,
              "allowed_mechanisms": ["distributed_skellam"],
              "allowed_target_modules": ["q_proj"],
              "max_rank": 16,
              "max_rounds_per_day": 100
            }
            """);
        return path;
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
