using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Microsoft.Extensions.Logging;

namespace Federated.Benchmarks;

/// <summary>
/// `rounds`: one SecAgg+ round over real mutual TLS on loopback with n clients submitting random updates of d
/// ring elements, on the graph the coordinator's run driver picks (<see cref="RoundGraph"/>: sparse from 32 clients),
/// with a fraction of the clients vanishing after sharing their keys (the costly dropout: their pairwise masks must be
/// rebuilt). Reports round overhead (round wall time minus the slowest client's input preparation, which stands in for
/// training), the coordinator-side time (its protocol work: stage messages, chunk sums, stage closes, unmasking)
/// against a plain FedAvg sum of the same survivors' vectors as floats, and the bytes on the wire per client (TLS
/// records both ways) against 4 d.
/// Options: --clients 8,32,100 --d 1048576 --dropout 0.1 --stage-seconds 30 (--quick: 4 clients, d = 65536). With
/// dropouts the masked-input stage closes at its deadline (3 x stage-seconds after the round opens), so the round's
/// wall time includes that wait; the coordinator-side time does not.
/// </summary>
internal sealed class RoundsBenchmark : IBenchmarkSuite
{
    public string Name => "rounds";

    public async Task<int> RunAsync(BenchmarkOptions options)
    {
        int d = options.GetInt("d", options.Quick ? 65_536 : 1_048_576);
        int[] counts = options.Values.TryGetValue("clients", out string? list)
            ? [.. list.Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture))]
            : options.Quick ? [4] : [8, 32, 100];
        double dropout = options.Values.TryGetValue("dropout", out string? fraction) ? double.Parse(fraction, CultureInfo.InvariantCulture) : 0.1;
        if (!(dropout >= 0 && dropout < 0.5))
        {
            Console.Error.WriteLine($"rounds: --dropout {dropout} is outside [0, 0.5).");
            return 2;
        }
        TimeSpan stageTimeout = TimeSpan.FromSeconds(options.GetInt("stage-seconds", 30));
        var results = new List<Dictionary<string, object>>();
        foreach (int n in counts)
        {
            results.Add(await RunRoundAsync(n, d, dropout, stageTimeout));
        }
        if (options.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { suite = Name, d, dropout, processor_count = Environment.ProcessorCount, rounds = results }));
        }
        else
        {
            foreach (Dictionary<string, object> r in results)
            {
                Console.WriteLine(string.Join("  ", r.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Key}={p.Value}"))));
            }
        }
        return 0;
    }

    private static async Task<Dictionary<string, object>> RunRoundAsync(int n, int d, double dropout, TimeSpan stageTimeout)
    {
        string root = Path.Combine(Path.GetTempPath(), "federated-bench-rounds-" + Guid.NewGuid().ToString("N"));
        try
        {
            string[] names = [.. Enumerable.Range(1, n).Select(i => $"client{i:D3}")];
            TestFederation federation = TestFederation.Create(root, names);
            await using CoordinatorHost host = CoordinatorHost.Create(
                new CoordinatorOptions { Pki = root, Port = 0, Address = "127.0.0.1", State = Path.Combine(root, "state.db") },
                logging => logging.AddSimpleConsole().SetMinimumLevel(LogLevel.Warning));
            await host.StartAsync(CancellationToken.None);

            var clients = new List<(string Name, EdgeIdentity Identity, CoordinatorConnection Connection, CountingStreamTotals Wire)>();
            foreach (string name in names)
            {
                var identity = EdgeIdentity.Load(federation.Identity(name), federation.CaPath);
                var wire = new CountingStreamTotals();
                var connection = new CoordinatorConnection(host.Address, identity, new ConnectionOptions
                {
                    CallTimeout = TimeSpan.FromMinutes(2),
                    TransportObserver = stream => new CountingStream(stream, wire),
                });
                await connection.RegisterAsync(new RegisterRequest { ClientVersion = "bench", Device = "cpu" }, CancellationToken.None);
                clients.Add((name, identity, connection, wire));
            }

            // The run driver's choice for a run with the default min_survivors (about two thirds).
            int minSurvivors = RunPlanValidation.DefaultThreshold(n);
            (int degree, int threshold) = RoundGraph.Choose(n, minSurvivors);
            int drops = (int)Math.Round(dropout * n);
            if (n - drops < minSurvivors)
            {
                throw new ArgumentOutOfRangeException(nameof(dropout), dropout, $"{drops} of {n} dropouts leave fewer than min_survivors {minSurvivors}.");
            }
            // Each client's update is the AES-CTR stream of its seed, so the FedAvg baseline and the check can rebuild it.
            byte[][] seeds = [.. names.Select(_ => RandomNumberGenerator.GetBytes(MaskPrg.SeedBytes))];
            long[] wireBefore = [.. clients.Select(c => c.Wire.Total)];
            var preparation = new double[n];
            long start = Stopwatch.GetTimestamp();
            SecAggRound round = host.Rounds.Start(new SecAggRoundPlan("bench", 1, names, d, 32, degree, threshold, stageTimeout, MinSurvivors: minSurvivors));
            await Task.WhenAll(clients.Select((c, i) => Task.Run(async () =>
            {
                HeartbeatResponse heartbeat = await c.Connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
                var participant = new SecAggParticipant(c.Connection, c.Name)
                {
                    // The first clients vanish after sharing their keys, as a killed process would.
                    BeforeStage = (stage, _) => i < drops && stage == RoundStage.MaskedInput ? throw new OperationCanceledException("dropped") : Task.CompletedTask,
                };
                RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
                try
                {
                    await participant.ParticipateAsync(manifest, (_, _) =>
                    {
                        long t = Stopwatch.GetTimestamp();
                        uint[] update = Update(seeds[i], d);
                        preparation[i] = Stopwatch.GetElapsedTime(t).TotalSeconds;
                        return Task.FromResult(update);
                    }, CancellationToken.None);
                }
                catch (OperationCanceledException) when (i < drops)
                {
                }
            })));
            uint[] sum = await round.Sum;
            double wall = Stopwatch.GetElapsedTime(start).TotalSeconds;
            IReadOnlyDictionary<RoundStage, DateTimeOffset> closed = round.StageClosedAt;
            double Stage(RoundStage stage, DateTimeOffset from) => Math.Round((closed[stage] - from).TotalSeconds, 3);
            double coordinator = round.SessionTime.TotalSeconds;
            double unmask = round.UnmaskTime.TotalSeconds;
            int survivors = round.Survivors.Count;
            host.Rounds.Finish(round);

            // Plain FedAvg over the same survivors: their vectors as floats, summed on one thread (the conversion is not timed).
            var expected = new uint[d];
            var floats = new float[d];
            var floatSum = new float[d];
            long fedAvgTicks = 0;
            for (int i = drops; i < n; i++)
            {
                uint[] update = Update(seeds[i], d);
                RingVector.AddInPlace(expected, update);
                for (int j = 0; j < d; j++)
                {
                    floats[j] = (int)update[j] * (1f / (1 << 20));
                }
                long t = Stopwatch.GetTimestamp();
                AddFloats(floatSum, floats);
                fedAvgTicks += Stopwatch.GetTimestamp() - t;
            }
            double fedAvg = Stopwatch.GetElapsedTime(0, fedAvgTicks).TotalSeconds;

            double[] perClient = [.. clients.Select((c, i) => (double)(c.Wire.Total - wireBefore[i]))];
            foreach (var c in clients)
            {
                c.Connection.Dispose();
                c.Identity.Dispose();
            }
            return new Dictionary<string, object>
            {
                ["clients"] = n,
                ["degree"] = degree,
                ["threshold"] = threshold,
                ["min_survivors"] = minSurvivors,
                ["sparse_graph"] = degree < n - 1,
                ["dropped"] = drops,
                ["survivors"] = survivors,
                ["exact_sum"] = sum.AsSpan().SequenceEqual(expected),
                // The coordinator's own protocol work (messages, chunk sums, stage closes, unmasking on every core),
                // against one thread summing the survivors' float vectors: the cost SecAgg+ adds to plain FedAvg.
                ["coordinator_seconds"] = Math.Round(coordinator, 4),
                ["coordinator_unmask_seconds"] = Math.Round(unmask, 4),
                ["coordinator_over_fedavg_without_unmask"] = Math.Round((coordinator - unmask) / fedAvg, 2),
                ["fedavg_sum_seconds"] = Math.Round(fedAvg, 4),
                ["coordinator_over_fedavg"] = Math.Round(coordinator / fedAvg, 2),
                ["round_seconds"] = Math.Round(wall, 3),
                ["slowest_client_preparation_seconds"] = Math.Round(preparation.Max(), 3),
                ["overhead_seconds"] = Math.Round(wall - preparation.Max(), 3),
                // Stage durations on the coordinator's clock: masked_input includes every client's masking (on this
                // machine's shared cores) and upload; unmask is the coordinator's reconstruction and mask removal.
                ["stage_advertise_seconds"] = Stage(RoundStage.AdvertiseKeys, round.OpenedAt),
                ["stage_share_keys_seconds"] = Stage(RoundStage.ShareKeys, closed[RoundStage.AdvertiseKeys]),
                ["stage_masked_input_seconds"] = Stage(RoundStage.MaskedInput, closed[RoundStage.ShareKeys]),
                ["stage_unmask_seconds"] = Stage(RoundStage.Unmask, closed[RoundStage.MaskedInput]),
                ["wire_bytes_per_client_mean"] = Math.Round(perClient.Average()),
                ["wire_bytes_per_client_max"] = perClient.Max(),
                ["plain_update_bytes"] = 4L * d,
                ["wire_expansion"] = Math.Round(perClient.Average() / (4.0 * d), 4),
                ["sum_length"] = sum.Length,
            };
        }
        finally
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static uint[] Update(byte[] seed, int d)
    {
        var update = new uint[d];
        using var prg = new MaskPrg(seed);
        prg.Apply(0, update, KeystreamOperation.Store);
        return update;
    }

    private static void AddFloats(float[] accumulator, float[] values)
    {
        var acc = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(accumulator.AsSpan());
        var src = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(values.AsSpan());
        for (int i = 0; i < acc.Length; i++)
        {
            acc[i] += src[i];
        }
        for (int i = acc.Length * System.Numerics.Vector<float>.Count; i < accumulator.Length; i++)
        {
            accumulator[i] += values[i];
        }
    }

    /// <summary>Byte totals of one client's TCP connections (all of them, both directions).</summary>
    private sealed class CountingStreamTotals
    {
        private long _total;

        public long Total => Interlocked.Read(ref _total);

        public void Add(int count) => Interlocked.Add(ref _total, count);
    }

    /// <summary>Counts every byte read from and written to the raw socket stream, below TLS.</summary>
    private sealed class CountingStream(Stream inner, CountingStreamTotals totals) : Stream
    {
        public override bool CanRead => inner.CanRead;

        public override bool CanSeek => false;

        public override bool CanWrite => inner.CanWrite;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override void Flush() => inner.Flush();

        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

        public override int Read(byte[] buffer, int offset, int count)
        {
            int read = inner.Read(buffer, offset, count);
            totals.Add(read);
            return read;
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int read = await inner.ReadAsync(buffer, cancellationToken);
            totals.Add(read);
            return read;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            totals.Add(count);
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await inner.WriteAsync(buffer, cancellationToken);
            totals.Add(buffer.Length);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
