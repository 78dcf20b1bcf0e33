using System.Security.Cryptography;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Aggregation.SecureAggregation;
using Federated.EdgeClient.Rounds;
using Federated.Protos.V1;
using Grpc.Core;
using SecAggParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;
using WireChunk = Federated.Protos.V1.MaskedInputChunk;

namespace Federated.Benchmarks;

/// <summary>
/// `upload`: the edge client's managed memory from the trained delta to the last upload chunk, at a LoRA-sized d. The
/// path is the production one (the DSkellam encoder, SecAgg+ masking of the ring buffer in place, and the participant's
/// chunk writer <see cref="SecAggParticipant.WriteMaskedAsync"/>) for one client of a 3-client round whose key exchange
/// ran in process; the chunks go to a sink that serializes each one as the gRPC channel does and drops it. Reports
/// bytes per parameter allocated along the path (GC.GetTotalAllocatedBytes) and held while the upload runs (reachable
/// after a full collection, halfway through the chunks), against the 4 bytes per element of the ring buffer itself.
/// Options: --d 1048576 --bits 32 --chunk 1048576 (--quick: d = 131072).
/// </summary>
internal sealed class UploadMemoryBenchmark : IBenchmarkSuite
{
    public string Name => "upload";

    public async Task<int> RunAsync(BenchmarkOptions options)
    {
        int d = options.GetInt("d", options.Quick ? 131_072 : 1_048_576);
        int bits = options.GetInt("bits", 32);
        uint chunkBytes = (uint)options.GetInt("chunk", 1 << 20);
        DSkellamPlan plan = DSkellamPlan.Calibrate(new DSkellamParameters(d, bits, ClipNorm: 1.0, NoiseMultiplier: 0.5, MaxClients: 3, MinClients: 2));
        byte[] rotationSeed = RandomNumberGenerator.GetBytes(32);
        var round = new RoundRef { RunId = "bench-upload", Round = 1 };

        // Warm-up: the first pass JITs the path; its allocations are not the steady state a long-running client sees.
        await MeasureAsync(plan, rotationSeed, round, chunkBytes);
        UploadMemory memory = await MeasureAsync(plan, rotationSeed, round, chunkBytes);

        var result = new Dictionary<string, object>
        {
            ["suite"] = Name,
            ["d"] = d,
            ["padded_d"] = plan.PaddedDimension,
            ["ring_bits"] = bits,
            ["chunk_bytes"] = chunkBytes,
            ["chunks"] = memory.Chunks,
            ["ring_buffer_bytes_per_parameter"] = Math.Round(4.0 * plan.PaddedDimension / d, 3),
            ["held_bytes_per_parameter_during_upload"] = Math.Round((double)memory.HeldDuringUpload / d, 3),
            ["allocated_bytes_per_parameter_delta_to_upload"] = Math.Round((double)memory.Allocated / d, 3),
        };
        if (options.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            foreach ((string key, object value) in result)
            {
                Console.WriteLine($"{key,-46} {value}");
            }
        }
        return 0;
    }

    private sealed record UploadMemory(long Allocated, long HeldDuringUpload, int Chunks);

    private static async Task<UploadMemory> MeasureAsync(DSkellamPlan plan, byte[] rotationSeed, RoundRef round, uint chunkBytes)
    {
        using SessionTrio sessions = SessionTrio.AtMaskedInput(round.RunId, round.Round, plan.PaddedDimension, plan.Parameters.Bits);
        int chunks = (int)((4L * plan.PaddedDimension + chunkBytes - 1) / chunkBytes);
        long held = -1;
        var sink = new SerializingSink(chunks / 2 + 1, () => held = GC.GetTotalMemory(forceFullCollection: true));

        long baseline = GC.GetTotalMemory(forceFullCollection: true);
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        // What EdgeRoundWorker hands the participant: the flat lora_B delta of local training, encoded into the ring.
        uint[] ring = Encode(plan, rotationSeed);
        sessions.First.MaskInPlace(ring);
        await SecAggParticipant.WriteMaskedAsync(sink, round, ring, chunkBytes, CancellationToken.None);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        GC.KeepAlive(ring);
        return new UploadMemory(allocated, held - baseline, sink.Written);
    }

    // A separate method, so nothing but the encoded ring outlives the encoding (as in EdgeRoundWorker's closure).
    private static uint[] Encode(DSkellamPlan plan, byte[] rotationSeed)
    {
        float[] delta = new float[plan.Parameters.Dimension];
        var random = new Random(7);
        for (int i = 0; i < delta.Length; i++)
        {
            delta[i] = (float)(random.NextDouble() - 0.5) * 1e-3f;
        }
        return new DSkellamEncoder(plan, rotationSeed).Encode(delta).Values;
    }

    /// <summary>Three SecAgg+ client sessions of one complete-graph round, advanced in process to the masked-input stage.</summary>
    private sealed class SessionTrio : IDisposable
    {
        private readonly ClientSession[] _sessions;

        private SessionTrio(ClientSession[] sessions) => _sessions = sessions;

        public ClientSession First => _sessions[0];

        public static SessionTrio AtMaskedInput(string runId, long round, int length, int bits)
        {
            int[] ids = [1, 2, 3];
            var parameters = SecAggParameters.Create(runId, round, ids, length, bits, degree: 2, threshold: 2, RandomNumberGenerator.GetBytes(32));
            ClientSession[] sessions = [.. ids.Select(id => new ClientSession(parameters, id))];
            AdvertiseKeysMessage[] keys = [.. sessions.Select(s => s.AdvertiseKeys())];
            ShareKeysMessage[] dealt = [.. sessions.Select((s, i) => s.ReceiveRoster(new KeyRosterMessage(ids[i],
                [.. keys.Where(k => k.Sender != ids[i]).Select(k => new AdvertisedKeys(k.Sender, k.CipherPublicKey, k.MaskPublicKey))])))];
            for (int i = 0; i < sessions.Length; i++)
            {
                int receiver = ids[i];
                sessions[i].ReceiveForwardedShares(new ForwardedSharesMessage(receiver,
                    [.. dealt.Where(m => m.Sender != receiver).SelectMany(m => m.Shares.Where(s => s.Receiver == receiver).Select(s => new ForwardedShare(m.Sender, s.Ciphertext)))]));
            }
            return new SessionTrio(sessions);
        }

        public void Dispose()
        {
            foreach (ClientSession session in _sessions)
            {
                session.Dispose();
            }
        }
    }

    /// <summary>Serializes each chunk into one reused buffer (as the channel frames a message) and drops it; calls back once halfway.</summary>
    private sealed class SerializingSink(int measureAt, Action measure) : IClientStreamWriter<WireChunk>
    {
        private byte[] _buffer = [];

        public int Written { get; private set; }

        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(WireChunk message)
        {
            int size = message.CalculateSize();
            if (_buffer.Length < size)
            {
                _buffer = new byte[size];
            }
            Google.Protobuf.MessageExtensions.WriteTo(message, _buffer.AsSpan(0, size));
            if (++Written == measureAt)
            {
                measure();
            }
            return Task.CompletedTask;
        }

        public Task CompleteAsync() => Task.CompletedTask;
    }
}
