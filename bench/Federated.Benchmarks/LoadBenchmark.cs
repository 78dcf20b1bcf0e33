using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Grpc.Core;

namespace Federated.Benchmarks;

/// <summary>
/// `load`: a real coordinator process (`coordinator serve`, so its memory is its own) holding many concurrent edge
/// connections on loopback mutual TLS, each with its own client identity from the PKI and heart-beating on the
/// interval the coordinator gives it, while a run keeps a SecAgg+ round in progress among a subset (the selected
/// clients submit zero updates through the real participant code). Reports errors (goal 0), heartbeat latency
/// percentiles and the coordinator's peak working set.
/// Options: --clients 200 --seconds 60 --round-clients 10 --interval 5 [--coordinator PATH/coordinator.dll]
/// [--state sqlite|postgres] (--quick: 20 clients, 10 s, rounds of 3, interval 2). `--state postgres` puts the
/// coordinator's state in a fresh database on the PostgreSQL of TestKit's PostgresServer (FEDERATED_TEST_POSTGRES or a
/// throwaway cluster); the default is a SQLite file.
/// </summary>
internal sealed class LoadBenchmark : IBenchmarkSuite
{
    public string Name => "load";

    public async Task<int> RunAsync(BenchmarkOptions options)
    {
        int clientCount = options.GetInt("clients", options.Quick ? 20 : 200);
        int seconds = options.GetInt("seconds", options.Quick ? 10 : 60);
        int roundClients = options.GetInt("round-clients", options.Quick ? 3 : 10);
        int interval = options.GetInt("interval", options.Quick ? 2 : 5);
        string coordinatorDll = options.Values.TryGetValue("coordinator", out string? path) ? path : Path.Combine(AppContext.BaseDirectory, "coordinator.dll");
        if (!File.Exists(coordinatorDll))
        {
            Console.Error.WriteLine($"coordinator.dll not found at '{coordinatorDll}'; build src/Coordinator or pass --coordinator PATH");
            return 2;
        }
        string backend = options.Values.TryGetValue("state", out string? chosen) ? chosen : "sqlite";
        if (backend is not ("sqlite" or "postgres"))
        {
            Console.Error.WriteLine($"--state '{backend}' is not one of sqlite, postgres");
            return 2;
        }
        string root = Path.Combine(Path.GetTempPath(), "federated-bench-load-" + Guid.NewGuid().ToString("N"));
        try
        {
            string state = backend == "postgres" ? PostgresServer.Shared.CreateDatabase() : Path.Combine(root, "state.db");
            LoadResult result = await RunLoadAsync(root, coordinatorDll, state, backend, clientCount, seconds, roundClients, interval);
            if (options.Json)
            {
                Console.WriteLine(JsonSerializer.Serialize(result, s_json));
            }
            else
            {
                foreach ((string key, JsonElement value) in JsonSerializer.SerializeToElement(result, s_json).EnumerateObject().Select(p => (p.Name, p.Value)))
                {
                    Console.WriteLine($"{key,-36} {value}");
                }
            }
            return result.Errors == 0 ? 0 : 1;
        }
        finally
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                // Left for the OS temp cleaner.
            }
        }
    }

    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    private static async Task<LoadResult> RunLoadAsync(string root, string coordinatorDll, string state, string backend, int clientCount, int seconds, int roundClients, int interval)
    {
        string[] names = [.. Enumerable.Range(1, clientCount).Select(i => $"edge{i:D4}")];
        TestFederation federation = TestFederation.Create(Path.Combine(root, "pki"), names);
        string pki = federation.Directory;
        string caPath = federation.CaPath;

        using CoordinatorProcess coordinator = await CoordinatorProcess.StartAsync(pki, state, TimeSpan.FromMinutes(2),
            heartbeatIntervalSeconds: interval, coordinatorDll: coordinatorDll);
        Uri address = coordinator.Address;

        var errors = new ConcurrentDictionary<string, int>(StringComparer.Ordinal);
        void Error(string kind) => errors.AddOrUpdate(kind, 1, (_, n) => n + 1);
        var latencies = new ConcurrentBag<double>();
        int participations = 0;

        // Connect and register every client (the TLS handshakes), at most 16 at a time.
        var clients = new EdgeClientState[clientCount];
        var connectWatch = Stopwatch.StartNew();
        using (var gate = new SemaphoreSlim(16))
        {
            await Task.WhenAll(names.Select(async (name, i) =>
            {
                await gate.WaitAsync();
                try
                {
                    var identity = EdgeIdentity.Load(Path.Combine(pki, name + ".pfx"), caPath);
                    var connection = new CoordinatorConnection(address, identity, new ConnectionOptions { CallTimeout = TimeSpan.FromSeconds(60) });
                    clients[i] = new EdgeClientState(name, identity, connection);
                    await connection.Edge.RegisterAsync(new RegisterRequest { ClientVersion = "bench", Device = "cpu" }, connection.Call(default)).ResponseAsync;
                }
                catch (RpcException ex)
                {
                    Error("register " + ex.StatusCode);
                }
                finally
                {
                    gate.Release();
                }
            }));
        }
        double connectSeconds = connectWatch.Elapsed.TotalSeconds;

        using var stop = new CancellationTokenSource();
        long memorySamples = 0;
        long peakWorkingSet = 0;
        Task sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                Interlocked.Exchange(ref peakWorkingSet, Math.Max(Interlocked.Read(ref peakWorkingSet), coordinator.WorkingSet()));
                memorySamples++;
                await Task.Delay(200, CancellationToken.None);
            }
        });

        TimeSpan period = TimeSpan.FromSeconds(interval);
        Task[] heartbeats = [.. clients.Select((client, i) => Task.Run(() => HeartbeatLoopAsync(client, period, i, latencies, Error, () => Interlocked.Increment(ref participations), stop.Token)))];

        // A run whose rounds follow one another among the available clients for as long as the load lasts.
        using var engineerIdentity = EdgeIdentity.Load(Path.Combine(pki, "engineer.pfx"), caPath);
        using var officerIdentity = EdgeIdentity.Load(Path.Combine(pki, "officer.pfx"), caPath);
        using var engineer = new CoordinatorConnection(address, engineerIdentity);
        using var officer = new CoordinatorConnection(address, officerIdentity);
        var asEngineer = new AdminService.AdminServiceClient(engineer.Channel);
        var asOfficer = new AdminService.AdminServiceClient(officer.Channel);
        string baseModel = Path.Combine(root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 1);
        await asOfficer.SetBudgetAsync(new SetBudgetRequest { Epsilon = 1e9, Delta = 1e-3 }, officer.Call(default));
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = 1000, ClientsPerRound = (uint)roundClients, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1.0, Delta = 1e-6,
        };
        StartRunResponse run = await asEngineer.StartRunAsync(new StartRunRequest { Plan = plan }, engineer.Call(default));

        var loadWatch = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(seconds));
        double loadSeconds = loadWatch.Elapsed.TotalSeconds;
        long peakRss = coordinator.PeakResidentBytes();
        RunStatus status = await asEngineer.GetRunStatusAsync(new GetRunStatusRequest { RunId = run.RunId }, engineer.Call(default));
        GetLedgerResponse ledger = await asOfficer.GetLedgerAsync(new GetLedgerRequest { RunId = run.RunId }, officer.Call(default));
        await stop.CancelAsync();
        await Task.WhenAll(heartbeats);
        await sampler;
        await asEngineer.AbortRunAsync(new AbortRunRequest { RunId = run.RunId, Reason = "load benchmark over" }, engineer.Call(default));
        foreach (EdgeClientState client in clients.Where(c => c is not null))
        {
            client.Dispose();
        }

        double[] sorted = [.. latencies.Order()];
        return new LoadResult(
            Suite: "load",
            State: backend,
            Clients: clientCount,
            Seconds: Math.Round(loadSeconds, 1),
            HeartbeatIntervalSeconds: interval,
            RoundClients: roundClients,
            ProcessorCount: Environment.ProcessorCount,
            ConnectSeconds: Math.Round(connectSeconds, 2),
            Heartbeats: sorted.Length,
            Errors: errors.Values.Sum(),
            ErrorKinds: new SortedDictionary<string, int>(errors, StringComparer.Ordinal),
            HeartbeatP50Ms: Math.Round(Percentile(sorted, 0.50), 2),
            HeartbeatP99Ms: Math.Round(Percentile(sorted, 0.99), 2),
            HeartbeatMaxMs: Math.Round(sorted.Length == 0 ? 0 : sorted[^1], 2),
            RoundsCompleted: ledger.Entries.Count,
            RoundInProgress: status.CurrentRound,
            RoundParticipations: participations,
            CoordinatorPeakWorkingSetMb: Math.Round(Interlocked.Read(ref peakWorkingSet) / 1048576.0, 1),
            CoordinatorPeakRssMb: peakRss < 0 ? null : Math.Round(peakRss / 1048576.0, 1),
            MemorySamples: memorySamples);
    }

    /// <summary>Heartbeats on a fixed schedule (first beat at a random offset, so the clients do not beat in step) and takes part in any round it is invited to.</summary>
    private static async Task HeartbeatLoopAsync(
        EdgeClientState client, TimeSpan period, int seed, ConcurrentBag<double> latencies, Action<string> error, Action participated, CancellationToken stop)
    {
        if (client is null)
        {
            return;
        }
        var random = new Random(seed);
        TimeSpan due = period * random.NextDouble();
        var clock = Stopwatch.StartNew();
        Task? participation = null;
        while (!stop.IsCancellationRequested)
        {
            TimeSpan wait = due - clock.Elapsed;
            try
            {
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, stop);
                }
            }
            catch (OperationCanceledException)
            {
                break;
            }
            due += period;
            bool busy = participation is { IsCompleted: false };
            long start = Stopwatch.GetTimestamp();
            try
            {
                HeartbeatResponse beat = await client.Connection.Edge.HeartbeatAsync(
                    new HeartbeatRequest { Available = !busy }, client.Connection.Call(stop)).ResponseAsync;
                latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                if (beat.Invitation is not null && !busy)
                {
                    participation = ParticipateAsync(client, beat.Invitation, error, participated, stop);
                }
            }
            catch (RpcException) when (stop.IsCancellationRequested)
            {
                break;
            }
            catch (RpcException ex)
            {
                error("heartbeat " + ex.StatusCode);
            }
        }
        if (participation is not null)
        {
            await participation;
        }
    }

    private static async Task ParticipateAsync(EdgeClientState client, RoundRef invitation, Action<string> error, Action participated, CancellationToken stop)
    {
        try
        {
            var participant = new SecAggParticipant(client.Connection, client.Name);
            RoundManifest manifest = await participant.FetchManifestAsync(invitation, stop);
            // A zero update: the load is the protocol and the wire, not training.
            await participant.ParticipateAsync(manifest, (m, _) => Task.FromResult(new uint[m.Secagg.VectorLength]), stop);
            participated();
        }
        catch (Exception ex) when (stop.IsCancellationRequested && ex is OperationCanceledException or RpcException)
        {
            // The benchmark ended during the round.
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.Aborted)
        {
            // The run was aborted at the end of the benchmark.
        }
        catch (Exception ex) when (ex is RpcException or InvalidDataException or Aggregation.SecureAggregation.SecureAggregationException)
        {
            error("round " + (ex is RpcException rpc ? rpc.StatusCode.ToString() : ex.GetType().Name));
        }
    }

    private static double Percentile(double[] sorted, double q)
    {
        if (sorted.Length == 0)
        {
            return 0;
        }
        // Nearest rank.
        int rank = (int)Math.Ceiling(q * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    private sealed record LoadResult(
        string Suite,
        string State,
        int Clients,
        double Seconds,
        int HeartbeatIntervalSeconds,
        int RoundClients,
        int ProcessorCount,
        double ConnectSeconds,
        int Heartbeats,
        int Errors,
        IReadOnlyDictionary<string, int> ErrorKinds,
        double HeartbeatP50Ms,
        double HeartbeatP99Ms,
        double HeartbeatMaxMs,
        int RoundsCompleted,
        uint RoundInProgress,
        int RoundParticipations,
        double CoordinatorPeakWorkingSetMb,
        double? CoordinatorPeakRssMb,
        long MemorySamples);

    private sealed class EdgeClientState(string name, EdgeIdentity identity, CoordinatorConnection connection) : IDisposable
    {
        public string Name => name;

        public CoordinatorConnection Connection => connection;

        public void Dispose()
        {
            connection.Dispose();
            identity.Dispose();
        }
    }
}
