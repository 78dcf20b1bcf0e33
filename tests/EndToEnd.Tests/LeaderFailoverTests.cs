using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Federated.Coordinator.Services;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;
using Grpc.Health.V1;
using Npgsql;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Two `coordinator serve` processes on one PostgreSQL database, a leader and a standby: the leader SIGKILLed in the
/// middle of a round is replaced by the standby and the run completes with every released round charged once; a leader
/// frozen by SIGSTOP across a takeover wakes up fenced, commits nothing and exits.
/// </summary>
public sealed class LeaderFailoverTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];
    private static readonly TimeSpan s_start = TimeSpan.FromSeconds(90);

    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-failover-" + Guid.NewGuid().ToString("N")[..12]);

    [Fact]
    public async Task Serve_LeaderKilledMidRound_StandbyTakesOverAndRunCompletesWithEachRoundChargedOnce()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), s_clients);
        string state = PostgresServer.Shared.CreateDatabase();
        string model = Path.Combine(_root, "tiny");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 7);

        using CoordinatorProcess first = await StartAsync(federation, state, "first");
        await first.WaitForLineAsync(l => l.Contains("took the lease (token 1)", StringComparison.Ordinal), s_start);
        using CoordinatorProcess second = await StartAsync(federation, state, "second");
        await second.WaitForLineAsync(l => l.Contains("Standby at", StringComparison.Ordinal), s_start);
        string leader = Authority(first.Address), standby = Authority(second.Address);

        // The standby serves health only: NOT_SERVING naming the leader, and UNAVAILABLE naming it for everything else.
        using (EdgeIdentity alice = EdgeIdentity.Load(federation.Identity("alice"), federation.CaPath))
        using (var toStandby = new CoordinatorConnection(second.Address, alice))
        {
            using AsyncUnaryCall<HealthCheckResponse> health = new Health.HealthClient(toStandby.Channel).CheckAsync(new HealthCheckRequest(), toStandby.Call(CancellationToken.None));
            Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await health.ResponseAsync).Status);
            Assert.Equal(leader, health.GetTrailers().GetValue(StandbyInterceptor.LeaderTrailer));
            var refused = await Assert.ThrowsAsync<RpcException>(() => new EdgeService.EdgeServiceClient(toStandby.Channel)
                .RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, toStandby.Call(CancellationToken.None)).ResponseAsync);
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.Equal($"standby; the leader is {leader}", refused.Status.Detail);
        }

        string coordinators = $"{leader},{standby}";
        var (code, _, error) = await AdminAsync(federation, "officer", coordinators, "budget", "set", "--epsilon", "1000", "--delta", "1e-5", "--json");
        Assert.True(code == 0, error);
        var invitedToRound2 = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var edges = new List<DotnetProcess>();
        try
        {
            for (int i = 0; i < s_clients.Length; i++)
            {
                edges.Add(StartEdge(federation, s_clients[i], model, coordinators, i, invitedToRound2));
            }
            string runId = await StartRunAsync(federation, first.Address, model, rounds: 3);

            // Round 2 is held open (one client frozen right after its invitation, and the round needs all three)
            // while the leader is SIGKILLed: the kill lands in the middle of the round.
            // The invited client froze itself (SIGSTOP from its own line callback) the moment its invitation line arrived.
            int frozen = await invitedToRound2.Task.WaitAsync(TimeSpan.FromMinutes(4));
            first.Kill();
            await edges[frozen].ContinueAsync();
            await using (NpgsqlConnection db = await OpenAsync(state))
            {
                (int Round, int Stage) round2 = Assert.Single(await RoundsAsync(db, runId), r => r.Round == 2);
                Assert.NotEqual((int)RoundStage.Completed, round2.Stage);
                Assert.NotEqual((int)RoundStage.Failed, round2.Stage);
                Assert.Equal(new[] { 1 }, await LedgerRoundsAsync(db, runId));
            }

            await second.WaitForLineAsync(l => l.Contains("took the lease (token 2)", StringComparison.Ordinal), s_start);
            RunStatus final = await WaitForEndAsync(federation, second.Address, runId, TimeSpan.FromMinutes(5));
            Assert.True(final.State == RunState.Completed, $"run ended {final.State}: {final.Detail}");

            await using (NpgsqlConnection db = await OpenAsync(state))
            {
                List<(int Round, int Stage)> rounds = await RoundsAsync(db, runId);
                int[] completed = [.. rounds.Where(r => r.Stage == (int)RoundStage.Completed).Select(r => r.Round)];
                // Three released rounds, each charged exactly once; the interrupted round 2 failed and charged nothing.
                Assert.Equal(3, completed.Length);
                Assert.Equal(completed, await LedgerRoundsAsync(db, runId));
                Assert.Contains((2, (int)RoundStage.Failed), rounds);
                Assert.DoesNotContain(2, completed);
                Assert.True(await AuditContainsAsync(db, "coordinator stopped during this round"), "the takeover did not record the interrupted round");
            }
            (code, string verified, error) = await CoordinatorAsync(["audit", "verify", "--state", state, "--pki", federation.Directory]);
            Assert.True(code == 0, $"audit verify failed: {verified}\n{error}");

            // The clients' list got them to the new leader; the admin CLI's list does the same for the export.
            string export = Path.Combine(_root, "export");
            (code, string exported, error) = await AdminAsync(federation, "engineer", coordinators, "run", "export", runId, "--out", export);
            Assert.True(code == 0, error);
            Assert.Contains("signature verified", exported, StringComparison.Ordinal);
            (code, string checkedAdapter, error) = await DotnetProcess.RunAsync(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"),
                ["verify-adapter", export, "--ca", federation.CaPath], TimeSpan.FromMinutes(1));
            Assert.True(code == 0, $"{checkedAdapter}\n{error}");
        }
        finally
        {
            foreach (DotnetProcess edge in edges)
            {
                edge.Dispose();
            }
        }
    }

    [Fact]
    public async Task Serve_LeaderFrozenAcrossTakeover_WakesFencedCommitsNothingAndExitsNonZero()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), s_clients);
        string state = PostgresServer.Shared.CreateDatabase();
        string model = Path.Combine(_root, "base");
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(), seed: 13);
        var firstLines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using CoordinatorProcess first = await StartAsync(federation, state, "first", firstLines.Enqueue);
        await first.WaitForLineAsync(l => l.Contains("took the lease (token 1)", StringComparison.Ordinal), s_start);
        using CoordinatorProcess second = await StartAsync(federation, state, "second");
        await second.WaitForLineAsync(l => l.Contains("Standby at", StringComparison.Ordinal), s_start);

        // The clients hold round 1 open (before their masked inputs), so the frozen leader has a round in flight.
        var atUpload = new CountdownEvent(s_clients.Length);
        var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, federation.Identity(name), federation.CaPath, first.Address)
        {
            BeforeStage = async (manifest, stage, ct) =>
            {
                if (manifest.Round.Round == 1 && stage == RoundStage.MaskedInput)
                {
                    atUpload.Signal();
                    await released.Task.WaitAsync(ct);
                }
            },
        })];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        try
        {
            using (EdgeIdentity officer = EdgeIdentity.Load(federation.Identity("officer"), federation.CaPath))
            using (var asOfficer = new CoordinatorConnection(first.Address, officer))
            {
                await new AdminService.AdminServiceClient(asOfficer.Channel).SetBudgetAsync(
                    new SetBudgetRequest { Population = "default", Epsilon = 100, Delta = 1e-5 }, asOfficer.Call(CancellationToken.None));
            }
            string runId = await StartRunAsync(federation, first.Address, model, rounds: 2);
            Assert.True(atUpload.Wait(TimeSpan.FromMinutes(3), stop.Token), "the clients never reached the upload of round 1");

            await first.PauseAsync();
            await second.WaitForLineAsync(l => l.Contains("took the lease (token 2)", StringComparison.Ordinal), s_start);
            await WaitForServingAsync(federation, second.Address);
            Snapshot before;
            long auditBefore;
            await using (NpgsqlConnection db = await OpenAsync(state))
            {
                // The new leader resumed the run through the resume path: round 1 failed, nothing charged.
                // (The new leader may already have opened round 2; the clients never reach it, they only know the first.)
                List<(int Round, int Stage)> rounds = await RoundsAsync(db, runId);
                Assert.Equal((1, (int)RoundStage.Failed), rounds[0]);
                Assert.Empty(await LedgerRoundsAsync(db, runId));
                before = await SnapshotAsync(db, runId);
                auditBefore = await ScalarAsync<long>(db, "SELECT max(sequence) FROM audit");
                Assert.Equal(2, before.Token);
            }

            // Woken, the stale leader still believes it runs round 1; its clients move on to their uploads too.
            released.SetResult();
            await first.ContinueAsync();
            int code = await first.WaitForExitAsync(TimeSpan.FromMinutes(1));

            Assert.NotEqual(0, code);
            Assert.Contains("lost the leader lease", first.Tail, StringComparison.Ordinal);
            // Its round in flight tried to record its end and was refused by the fence.
            Assert.Contains(firstLines, l => l.Contains("Fence: write refused: this coordinator no longer holds the leader lease", StringComparison.Ordinal));
            await using (NpgsqlConnection db = await OpenAsync(state))
            {
                // What the stale leader would have written (round 1's end, its charge, its audit entries) is not there; the
                // new leader's own progress on round 2 is not compared.
                Assert.Equal(before, await SnapshotAsync(db, runId));
                Assert.Empty(await AuditOfRoundAfterAsync(db, runId, round: 1, auditBefore));
            }
            await WaitForServingAsync(federation, second.Address);
            (code, string verified, string error) = await CoordinatorAsync(["audit", "verify", "--state", state, "--pki", federation.Directory]);
            Assert.True(code == 0, $"audit verify failed: {verified}\n{error}");
        }
        finally
        {
            released.TrySetResult();
            await stop.CancelAsync();
            await Task.WhenAll(running.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    /// <summary>What the database holds that any write would change: the audit head, the rounds, the ledger, the runs and the lease.</summary>
    private sealed record Snapshot(string Round1, long LedgerRows, long Token, string Holder);

    private static async Task<Snapshot> SnapshotAsync(NpgsqlConnection db, string runId) => new(
        await ScalarAsync<string>(db, $"SELECT round || ':' || stage || ':' || coalesce(ended_at, '') FROM rounds WHERE run_id = '{runId}' AND round = 1"),
        await ScalarAsync<long>(db, "SELECT count(*) FROM ledger"),
        await ScalarAsync<long>(db, "SELECT token FROM coordinator_lease WHERE id = 1"),
        await ScalarAsync<string>(db, "SELECT holder FROM coordinator_lease WHERE id = 1"));

    private static async Task<List<string>> AuditOfRoundAfterAsync(NpgsqlConnection db, string runId, int round, long afterSequence)
    {
        await using var command = new NpgsqlCommand("SELECT canonical_json FROM audit WHERE sequence > @after ORDER BY sequence", db);
        command.Parameters.AddWithValue("after", afterSequence);
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync();
        var entries = new List<string>();
        while (await reader.ReadAsync())
        {
            string json = reader.GetString(0);
            if (json.Contains($"\"{runId}\"", StringComparison.Ordinal) && json.Contains($"\"round\":\"{round}\"", StringComparison.Ordinal))
            {
                entries.Add(json);
            }
        }
        return entries;
    }

    private async Task<CoordinatorProcess> StartAsync(TestFederation federation, string state, string name, Action<string>? lines = null) =>
        await CoordinatorProcess.StartAsync(federation.Directory, state, s_start, onLine: line =>
        {
            lines?.Invoke(line);
            Log($"{name}: {line}");
        }, arguments: ["--lease-seconds", "3"]);

    private DotnetProcess StartEdge(TestFederation federation, string name, string model, string coordinators, int index, TaskCompletionSource<int> invitedToRound2)
    {
        string home = Path.Combine(_root, "home-" + name);
        Directory.CreateDirectory(home);
        File.Copy(federation.Identity(name), Path.Combine(home, name + ".pfx"));
        File.WriteAllText(Path.Combine(home, "policy.json"), """
            {"delta": 1e-5, "max_epsilon_per_run": 100, "max_epsilon_lifetime": 1000, "min_noise_multiplier": 0.2,
             "allowed_mechanisms": ["distributed_skellam"], "allowed_target_modules": ["q_proj", "v_proj"], "max_rank": 8, "max_rounds_per_day": 20}
            """);
        string data = Path.Combine(home, "data.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"text\": \"{name} writes note number {i}\"}}"));
        var self = new StrongBox<DotnetProcess?>();
        self.Value = DotnetProcess.Start(DotnetProcess.BuildOutput("EdgeClient", "edge-client.dll"),
            ["run", "--coordinator", coordinators, "--identity", Path.Combine(home, name + ".pfx"), "--ca", federation.CaPath, "--data", data, "--model", model, "--device", "cpu"],
            line =>
            {
                Log($"{name}: {line}");
                // The first client invited to round 2 is frozen right here, on the line's arrival: a frozen client
                // scheduled later could already have finished the round on a loaded machine.
                if (line.Contains("invited to round 2 of run", StringComparison.Ordinal))
                {
                    lock (invitedToRound2)
                    {
                        if (!invitedToRound2.Task.IsCompleted && self.Value is { } process)
                        {
                            process.Pause();
                            invitedToRound2.SetResult(index);
                        }
                    }
                }
            });
        return self.Value;
    }

    private static async Task<string> StartRunAsync(TestFederation federation, Uri coordinator, string model, uint rounds)
    {
        using EdgeIdentity engineer = EdgeIdentity.Load(federation.Identity("engineer"), federation.CaPath);
        using var connection = new CoordinatorConnection(coordinator, engineer);
        var plan = new RunPlan
        {
            BaseModel = model, LoraRank = 2, Rounds = rounds, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
        };
        plan.TargetModules.Add("q_proj");
        StartRunResponse started = await new AdminService.AdminServiceClient(connection.Channel).StartRunAsync(
            new StartRunRequest { Plan = plan }, connection.Call(CancellationToken.None));
        return started.RunId;
    }

    private static async Task<RunStatus> WaitForEndAsync(TestFederation federation, Uri coordinator, string runId, TimeSpan limit)
    {
        using EdgeIdentity engineer = EdgeIdentity.Load(federation.Identity("engineer"), federation.CaPath);
        using var connection = new CoordinatorConnection(coordinator, engineer);
        var admin = new AdminService.AdminServiceClient(connection.Channel);
        using var timeout = new CancellationTokenSource(limit);
        while (true)
        {
            RunStatus status = await admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, connection.Call(timeout.Token));
            if (status.State is not (RunState.Pending or RunState.Running))
            {
                return status;
            }
            await Task.Delay(TimeSpan.FromMilliseconds(500), timeout.Token);
        }
    }

    private static async Task WaitForServingAsync(TestFederation federation, Uri coordinator)
    {
        using EdgeIdentity engineer = EdgeIdentity.Load(federation.Identity("engineer"), federation.CaPath);
        using var connection = new CoordinatorConnection(coordinator, engineer);
        var health = new Health.HealthClient(connection.Channel);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        while ((await health.CheckAsync(new HealthCheckRequest(), connection.Call(timeout.Token))).Status != HealthCheckResponse.Types.ServingStatus.Serving)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(200), timeout.Token);
        }
    }

    private static Task<(int Code, string Out, string Err)> AdminAsync(TestFederation federation, string identity, string coordinators, params string[] args) =>
        CoordinatorAsync([.. args, "--coordinator", coordinators, "--identity", federation.Identity(identity), "--ca", federation.CaPath]);

    private static Task<(int Code, string Out, string Err)> CoordinatorAsync(string[] args) =>
        DotnetProcess.RunAsync(DotnetProcess.BuildOutput("Coordinator", "coordinator.dll"), args, TimeSpan.FromMinutes(2));

    private static string Authority(Uri address) => address.GetLeftPart(UriPartial.Authority);

    private static async Task<NpgsqlConnection> OpenAsync(string connectionString)
    {
        var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        return connection;
    }

    private static async Task<List<(int Round, int Stage)>> RoundsAsync(NpgsqlConnection db, string runId)
    {
        await using var command = new NpgsqlCommand("SELECT round, stage FROM rounds WHERE run_id = @run ORDER BY round", db);
        command.Parameters.AddWithValue("run", runId);
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync();
        var rounds = new List<(int, int)>();
        while (await reader.ReadAsync())
        {
            rounds.Add((Convert.ToInt32(reader.GetValue(0), CultureInfo.InvariantCulture), Convert.ToInt32(reader.GetValue(1), CultureInfo.InvariantCulture)));
        }
        return rounds;
    }

    private static async Task<int[]> LedgerRoundsAsync(NpgsqlConnection db, string runId)
    {
        await using var command = new NpgsqlCommand("SELECT round FROM ledger WHERE run_id = @run ORDER BY sequence", db);
        command.Parameters.AddWithValue("run", runId);
        await using NpgsqlDataReader reader = await command.ExecuteReaderAsync();
        var rounds = new List<int>();
        while (await reader.ReadAsync())
        {
            rounds.Add(Convert.ToInt32(reader.GetValue(0), CultureInfo.InvariantCulture));
        }
        return [.. rounds];
    }

    private static async Task<bool> AuditContainsAsync(NpgsqlConnection db, string text)
    {
        await using var command = new NpgsqlCommand("SELECT count(*) FROM audit WHERE canonical_json LIKE @text", db);
        command.Parameters.AddWithValue("text", "%" + text + "%");
        return (long)(await command.ExecuteScalarAsync())! > 0;
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlConnection db, string sql)
    {
        await using var command = new NpgsqlCommand(sql, db);
        object? value = await command.ExecuteScalarAsync();
        return value is null or DBNull ? default! : (T)Convert.ChangeType(value, typeof(T), CultureInfo.InvariantCulture);
    }

    private void Log(string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // A child's line after the test ended.
        }
    }
}
