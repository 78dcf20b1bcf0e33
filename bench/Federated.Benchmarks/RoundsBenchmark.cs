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
/// ring elements. Reports round overhead (round wall time minus the slowest client's input preparation, which
/// stands in for training) and the bytes on the wire per client (TLS records both ways) against 4 d.
/// Options: --clients 8,32 --d 1048576 (--quick: 4 clients, d = 65536).
/// </summary>
internal sealed class RoundsBenchmark : IBenchmarkSuite
{
    public string Name => "rounds";

    public async Task<int> RunAsync(BenchmarkOptions options)
    {
        int d = options.GetInt("d", options.Quick ? 65_536 : 1_048_576);
        int[] counts = options.Values.TryGetValue("clients", out string? list)
            ? [.. list.Split(',').Select(v => int.Parse(v, CultureInfo.InvariantCulture))]
            : options.Quick ? [4] : [8, 32];
        var results = new List<Dictionary<string, object>>();
        foreach (int n in counts)
        {
            results.Add(await RunRoundAsync(n, d));
        }
        if (options.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { suite = Name, d, rounds = results }));
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

    private static async Task<Dictionary<string, object>> RunRoundAsync(int n, int d)
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

            (int degree, int threshold) = Federated.Aggregation.SecureAggregation.SecAggParameters.DeriveGraphParameters(n, dropoutFraction: 0.1, corruptFraction: 0.1);
            long[] wireBefore = [.. clients.Select(c => c.Wire.Total)];
            var preparation = new double[n];
            long start = Stopwatch.GetTimestamp();
            SecAggRound round = host.Rounds.Start(new SecAggRoundPlan("bench", 1, names, d, 32, degree, threshold, TimeSpan.FromMinutes(5)));
            await Task.WhenAll(clients.Select((c, i) => Task.Run(async () =>
            {
                HeartbeatResponse heartbeat = await c.Connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
                var participant = new SecAggParticipant(c.Connection, c.Name);
                RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
                await participant.ParticipateAsync(manifest, (_, _) =>
                {
                    long t = Stopwatch.GetTimestamp();
                    byte[] bytes = RandomNumberGenerator.GetBytes(4 * d);
                    uint[] update = new uint[d];
                    Buffer.BlockCopy(bytes, 0, update, 0, bytes.Length);
                    preparation[i] = Stopwatch.GetElapsedTime(t).TotalSeconds;
                    return Task.FromResult(update);
                }, CancellationToken.None);
            })));
            uint[] sum = await round.Sum;
            double wall = Stopwatch.GetElapsedTime(start).TotalSeconds;
            IReadOnlyDictionary<RoundStage, DateTimeOffset> closed = round.StageClosedAt;
            double Stage(RoundStage stage, DateTimeOffset from) => Math.Round((closed[stage] - from).TotalSeconds, 3);
            host.Rounds.Finish(round);

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
