using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Federated.Aggregation.SecureAggregation;

namespace Federated.Benchmarks;

/// <summary>
/// `secagg`: PRG and ring-sum throughput, one client's key agreements with k = 100 neighbours, and whole SecAgg+
/// rounds (n = 100, d = 4,194,304; --quick: n = 20, d = 262,144) on the complete and the SecAgg+ graph at 0% and
/// 10% dropout, against a plain float sum of the same vectors. Each client's masked vector is made just before the
/// server adds it, so memory stays O(d).
/// </summary>
internal sealed class SecAggBenchmark : IBenchmarkSuite
{
    public string Name => "secagg";

    public Task<int> RunAsync(BenchmarkOptions options)
    {
        // The simulated clients make 16 MiB of garbage each; a background GC on the second core would be charged to
        // whatever the server is timing. Blocking GCs keep that cost out of the measured sections.
        System.Runtime.GCSettings.LatencyMode = System.Runtime.GCLatencyMode.Batch;
        int n = options.GetInt("n", options.Quick ? 20 : 100);
        int d = options.GetInt("d", options.Quick ? 1 << 18 : 4_194_304);
        int bits = options.GetInt("bits", 32);
        int repeats = options.Quick ? 3 : options.Repeats;
        int threads = options.GetInt("threads", 1); // server unmask parallelism; 1 keeps the FedAvg comparison like for like
        if (options.Values.TryGetValue("only", out string? only))
        {
            if (only != "key-agreement")
            {
                Console.Error.WriteLine($"secagg: --only takes key-agreement, not '{only}'.");
                return Task.FromResult(2);
            }
            // Just the key-agreement figures, without the PRG figures and the minutes of whole rounds.
            var subset = new JsonObject
            {
                ["suite"] = Name,
                ["only"] = only,
                ["processor_count"] = Environment.ProcessorCount,
                ["openssl_fast_path"] = OpenSslP256.IsAvailable,
                ["key_agreement_ms"] = Round(KeyAgreementMs(100, 1, repeats, cpu: false)),
                ["key_agreement_ms_cpu_time"] = Round(KeyAgreementMs(100, 1, repeats, cpu: true)),
                ["key_agreement_ms_2_threads"] = Round(KeyAgreementMs(100, 2, repeats, cpu: false)),
                ["load_average_1m"] = LoadAverage(),
            };
            Console.WriteLine(options.Json ? subset.ToJsonString() : subset.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return Task.FromResult(0);
        }
        var result = new JsonObject
        {
            ["suite"] = Name,
            ["processor_count"] = Environment.ProcessorCount,
            ["aes_ni"] = System.Runtime.Intrinsics.X86.Aes.IsSupported,
            ["vector512"] = System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated,
            ["prg_gbps"] = Round(PrgGbps(repeats, cpu: false)),
            ["prg_gbps_cpu_time"] = Round(PrgGbps(repeats, cpu: true)),
            ["prg_fused_subtract_gbps_cpu_time"] = Round(PrgGbps(repeats, cpu: true, KeystreamOperation.Subtract, 16 * 1024)),
            ["ring_sum_gbps"] = Round(RingSumGbps(repeats, cpu: false)),
            ["ring_sum_gbps_cpu_time"] = Round(RingSumGbps(repeats, cpu: true)),
            ["key_agreement_ms"] = Round(KeyAgreementMs(100, 1, repeats, cpu: false)),
            ["key_agreement_ms_cpu_time"] = Round(KeyAgreementMs(100, 1, repeats, cpu: true)),
            ["key_agreement_ms_2_threads"] = Round(KeyAgreementMs(100, 2, repeats, cpu: false)),
            ["load_average_1m"] = LoadAverage(),
            ["n"] = n,
            ["d"] = d,
            ["bits"] = bits,
            ["server_threads"] = threads,
        };
        result["openssl_fast_path"] = OpenSslP256.IsAvailable;
        var (k, t) = SecAggParameters.DeriveGraphParameters(n, dropoutFraction: 0.10, corruptFraction: 0.05);
        var (k1000, t1000) = SecAggParameters.DeriveGraphParameters(1000, dropoutFraction: 0.33, corruptFraction: 0.05);
        result["rule_n1000_dropout33_corrupt5"] = new JsonObject { ["degree"] = k1000, ["threshold"] = t1000 };
        int completeThreshold = n - n / 10;
        foreach (var (name, degree, threshold) in new[] { ("complete", n - 1, completeThreshold), ("secaggplus", k, t) })
        {
            foreach (double dropout in new[] { 0.0, 0.10 })
            {
                string key = $"{name}_dropout{(int)(dropout * 100)}";
                JsonObject round = RunRound(n, d, bits, degree, threshold, dropout, threads);
                result[key] = round;
                if (!options.Json)
                {
                    Console.WriteLine($"{key}: {round.ToJsonString()}");
                }
            }
        }
        Console.WriteLine(options.Json ? result.ToJsonString() : result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return Task.FromResult(0);
    }

    // Median process CPU time (getrusage through Environment.CpuUsage): on a shared, oversubscribed machine this
    // leaves out the time spent waiting for a core.
    private static double CpuSeconds(int repeats, Action action)
    {
        action();
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            TimeSpan before = Environment.CpuUsage.TotalTime;
            action();
            times[i] = (Environment.CpuUsage.TotalTime - before).TotalSeconds;
        }
        return Measure.Median(times);
    }

    /// <summary>Accumulates wall-clock and process CPU time over start/stop sections.</summary>
    private sealed class DualTimer
    {
        private long _wallStart;
        private TimeSpan _cpuStart;
        private long _wallTicks;
        private TimeSpan _cpu;

        public double WallSeconds => _wallTicks / (double)Stopwatch.Frequency;

        public double CpuSeconds => _cpu.TotalSeconds;

        public void Start()
        {
            _cpuStart = Environment.CpuUsage.TotalTime;
            _wallStart = Stopwatch.GetTimestamp();
        }

        public void Stop()
        {
            _wallTicks += Stopwatch.GetTimestamp() - _wallStart;
            _cpu += Environment.CpuUsage.TotalTime - _cpuStart;
        }
    }

    // The machine is shared with other builds; the 1-minute load average puts the wall-clock figures in context.
    private static double LoadAverage()
    {
        try
        {
            return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return double.NaN;
        }
    }

    private static double Round(double value) => Math.Round(value, 4);

    // Keystream straight into ring elements on one core; a 256 KiB buffer stays in L2 so this measures AES.
    private static double PrgGbps(int repeats, bool cpu, KeystreamOperation operation = KeystreamOperation.Store, int length = 64 * 1024)
    {
        using var prg = new MaskPrg(RandomNumberGenerator.GetBytes(32));
        var buffer = new uint[length];
        int passes = (512 << 20) / (length * 4); // 512 MiB of keystream per measurement
        double seconds = (cpu ? (Func<int, Action, double>)CpuSeconds : (r, a) => Measure.MedianSeconds(r, a))(repeats, () =>
        {
            for (int i = 0; i < passes; i++)
            {
                prg.Apply((long)i * buffer.Length, buffer, operation);
            }
        });
        return passes * buffer.Length * 4.0 / seconds / 1e9;
    }

    // Bytes of input added per second: eight 4 MiB vectors into one accumulator.
    private static double RingSumGbps(int repeats, bool cpu)
    {
        const int length = 1 << 20;
        var accumulator = new uint[length];
        var inputs = Enumerable.Range(0, 8).Select(_ => MemoryMarshal.Cast<byte, uint>(RandomNumberGenerator.GetBytes(length * 4)).ToArray()).ToArray();
        const int passes = 16;
        double seconds = (cpu ? (Func<int, Action, double>)CpuSeconds : (r, a) => Measure.MedianSeconds(r, a))(repeats, () =>
        {
            for (int pass = 0; pass < passes; pass++)
            {
                foreach (uint[] input in inputs)
                {
                    RingVector.AddInPlace(accumulator, input);
                }
            }
        });
        return passes * inputs.Length * length * 4.0 / seconds / 1e9;
    }

    // One client's pairwise work with k neighbours, as ClientSession does it: own key pairs from SecAggCrypto (as
    // GenerateKeyPair makes them), and per neighbour one import of each advertised key, the share key (ECDH + HKDF
    // with the cipher key, ReceiveRoster) and the mask seed (ECDH + HKDF with the mask key, MaskInPlace).
    private static double KeyAgreementMs(int neighbours, int threads, int repeats, bool cpu)
    {
        SecureRandomFill random = RandomNumberGenerator.Fill;
        using var cipher = SecAggCrypto.GenerateKeyPair(random, out byte[] cipherScalar);
        using var mask = SecAggCrypto.GenerateKeyPair(random, out byte[] maskScalar);
        CryptographicOperations.ZeroMemory(cipherScalar);
        CryptographicOperations.ZeroMemory(maskScalar);
        var peers = Enumerable.Range(0, neighbours).Select(_ =>
        {
            using var a = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
            using var b = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
            return (SecAggCrypto.ExportPublicKey(a), SecAggCrypto.ExportPublicKey(b));
        }).ToArray();
        const int passes = 4; // four clients' worth per measurement, then divided
        double seconds = (cpu ? (Func<int, Action, double>)CpuSeconds : (r, a) => Measure.MedianSeconds(r, a))(repeats, () =>
        {
            for (int pass = 0; pass < passes; pass++)
            {
                Parallel.For(0, neighbours, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
                {
                    using PeerPublicKey cipherPeer = SecAggCrypto.TryImportPublicKey(peers[i].Item1)!;
                    using PeerPublicKey maskPeer = SecAggCrypto.TryImportPublicKey(peers[i].Item2)!;
                    byte[] shareKey = SecAggCrypto.DeriveSharedKey(cipher, cipherPeer, maskSeed: false, "bench", 1, 1, i + 2);
                    byte[] seed = SecAggCrypto.DeriveSharedKey(mask, maskPeer, maskSeed: true, "bench", 1, 1, i + 2);
                    CryptographicOperations.ZeroMemory(shareKey);
                    CryptographicOperations.ZeroMemory(seed);
                });
            }
        });
        return seconds * 1000 / passes;
    }

    private static JsonObject RunRound(int n, int d, int bits, int degree, int threshold, double dropout, int threads)
    {
        var parameters = SecAggParameters.Create("bench-run", 1, Enumerable.Range(1, n), d, bits, degree, threshold, RandomNumberGenerator.GetBytes(32));
        var clients = parameters.ClientIds.ToDictionary(id => id, id => new ClientSession(parameters, id));
        using var server = new ServerSession(parameters);
        var serverTime = new DualTimer();
        long clientBytes = 0;
        int observed = parameters.ClientIds[^1]; // never dropped: its traffic is the comm_expansion figure
        try
        {
            var adverts = clients.Values.Select(c => c.AdvertiseKeys()).ToList();
            clientBytes += adverts.First(a => a.Sender == observed).WireBytes;
            serverTime.Start();
            adverts.ForEach(server.ReceiveAdvertisement);
            var rosters = server.CloseAdvertiseKeys();
            serverTime.Stop();
            var shares = rosters.Select(r => clients[r.Key].ReceiveRoster(r.Value)).ToList();
            clientBytes += shares.First(s => s.Sender == observed).WireBytes;
            serverTime.Start();
            shares.ForEach(server.ReceiveShareKeys);
            var forwarded = server.CloseShareKeys();
            serverTime.Stop();

            // Dropouts after sharing keys: the costly case, since their pairwise masks must be rebuilt.
            int drops = (int)Math.Round(dropout * n);
            var dropped = parameters.ClientIds.Take(drops).ToHashSet();
            uint mask = RingVector.ModulusMask(bits);
            var input = new uint[d];
            var floats = new float[d];
            var floatSum = new float[d];
            var expected = new uint[d];
            var fedAvgTime = new DualTimer();
            var maskTimes = new List<double>();
            using var inputPrg = new MaskPrg(RandomNumberGenerator.GetBytes(32));
            foreach (var (id, message) in forwarded.OrderBy(f => f.Key))
            {
                if (dropped.Contains(id))
                {
                    continue;
                }
                inputPrg.Apply((long)id * d, input, KeystreamOperation.Store);
                RingVector.Reduce(input, bits);
                RingVector.AddInPlace(expected, input);
                long start = Stopwatch.GetTimestamp();
                clients[id].ReceiveForwardedShares(message);
                MaskedInputMessage masked = clients[id].MaskInput(input);
                maskTimes.Add(Stopwatch.GetElapsedTime(start).TotalSeconds);
                if (id == observed)
                {
                    clientBytes += masked.WireBytes;
                }
                serverTime.Start();
                foreach (MaskedInputChunk chunk in masked.Chunks(1 << 16))
                {
                    server.ReceiveMaskedInputChunk(chunk);
                }
                serverTime.Stop();

                // The same client's vector as floats, summed plainly: the FedAvg baseline.
                ToFloats(input, floats);
                fedAvgTime.Start();
                AddFloats(floatSum, floats);
                fedAvgTime.Stop();
            }
            serverTime.Start();
            var requests = server.CloseMaskedInput();
            serverTime.Stop();
            var responses = requests.Select(r => clients[r.Key].ReceiveUnmaskRequest(r.Value)).ToList();
            clientBytes += responses.First(r => r.Sender == observed).WireBytes;
            serverTime.Start();
            serverTime.Stop();
            GC.Collect(); // not charged to the server: the clients' garbage, not the server's
            serverTime.Start();
            responses.ForEach(server.ReceiveUnmaskResponse);
            var unmaskTime = new DualTimer();
            unmaskTime.Start();
            uint[] sum = server.Unmask(threads);
            unmaskTime.Stop();
            double unmaskSeconds = unmaskTime.WallSeconds;
            serverTime.Stop();
            RingVector.Reduce(expected, bits);
            bool correct = sum.AsSpan().SequenceEqual(expected);
            double fedAvg = fedAvgTime.WallSeconds;
            double serverTotal = serverTime.WallSeconds;
            return new JsonObject
            {
                ["degree"] = degree,
                ["threshold"] = threshold,
                ["dropped"] = drops,
                ["correct"] = correct,
                ["client_mask_s"] = Round(Measure.Median(maskTimes)),
                ["server_total_s"] = Round(serverTotal),
                ["server_unmask_s"] = Round(unmaskSeconds),
                ["fedavg_sum_s"] = Round(fedAvg),
                ["server_over_fedavg"] = Round(serverTotal / fedAvg),
                ["server_total_cpu_s"] = Round(serverTime.CpuSeconds),
                ["server_unmask_cpu_s"] = Round(unmaskTime.CpuSeconds),
                ["fedavg_sum_cpu_s"] = Round(fedAvgTime.CpuSeconds),
                ["server_over_fedavg_cpu_time"] = Round(serverTime.CpuSeconds / fedAvgTime.CpuSeconds),
                ["comm_expansion"] = Round(clientBytes / (4.0 * d)),
            };
        }
        finally
        {
            foreach (ClientSession c in clients.Values)
            {
                c.Dispose();
            }
        }
    }

    private static void ToFloats(uint[] values, float[] floats)
    {
        for (int i = 0; i < values.Length; i++)
        {
            floats[i] = (int)values[i] * (1f / (1 << 20));
        }
    }

    private static void AddFloats(float[] accumulator, float[] values)
    {
        var acc = MemoryMarshal.Cast<float, Vector<float>>(accumulator.AsSpan());
        var src = MemoryMarshal.Cast<float, Vector<float>>(values.AsSpan());
        for (int i = 0; i < acc.Length; i++)
        {
            acc[i] += src[i];
        }
        for (int i = acc.Length * Vector<float>.Count; i < accumulator.Length; i++)
        {
            accumulator[i] += values[i];
        }
    }
}
