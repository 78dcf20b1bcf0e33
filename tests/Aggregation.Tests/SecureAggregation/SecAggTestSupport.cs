using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

/// <summary>Deterministic random bytes from a seeded AES-CTR stream, so every test run is reproducible.</summary>
internal sealed class DeterministicRandom : IDisposable
{
    private readonly MaskPrg _prg;
    private long _offset;

    public DeterministicRandom(int seed)
    {
        byte[] key = new byte[32];
        BitConverter.TryWriteBytes(key, seed);
        _prg = new MaskPrg(key);
    }

    public void Fill(Span<byte> destination)
    {
        uint[] words = new uint[(destination.Length + 3) / 4];
        _prg.Apply(_offset, words, KeystreamOperation.Store);
        _offset += words.Length;
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(words.AsSpan())[..destination.Length].CopyTo(destination);
    }

    public int Next(int maxExclusive)
    {
        Span<byte> b = stackalloc byte[4];
        Fill(b);
        return (int)(BitConverter.ToUInt32(b) % (uint)maxExclusive);
    }

    public void Dispose() => _prg.Dispose();
}

/// <summary>Runs whole rounds in memory, with clients dropping before a chosen stage.</summary>
internal sealed class SecAggRound : IDisposable
{
    public SecAggRound(SecAggParameters parameters, int randomSeed)
    {
        Parameters = parameters;
        Random = new DeterministicRandom(randomSeed);
        Server = new ServerSession(parameters);
        Clients = parameters.ClientIds.ToDictionary(id => id, id => new ClientSession(parameters, id, Random.Fill));
    }

    public SecAggParameters Parameters { get; }

    public DeterministicRandom Random { get; }

    public ServerSession Server { get; }

    public Dictionary<int, ClientSession> Clients { get; }

    public Dictionary<int, KeyRosterMessage> Rosters { get; private set; } = [];

    public Dictionary<int, ShareKeysMessage> ShareKeys { get; } = [];

    public Dictionary<int, ForwardedSharesMessage> Forwarded { get; private set; } = [];

    public Dictionary<int, MaskedInputMessage> Masked { get; } = [];

    public Dictionary<int, UnmaskRequestMessage> Requests { get; private set; } = [];

    public Dictionary<int, UnmaskResponseMessage> Responses { get; } = [];

    public static SecAggParameters Create(int n, int d, int bits, int degree, int threshold, int seed = 7) =>
        SecAggParameters.Create("run-test", 3, Enumerable.Range(1, n).Select(i => i * 3 + 1), d, bits, degree, threshold, Enumerable.Repeat((byte)seed, 32).ToArray());

    public void Advertise(ISet<int> drop)
    {
        foreach (var (id, client) in Clients.Where(c => !drop.Contains(c.Key)))
        {
            Server.ReceiveAdvertisement(client.AdvertiseKeys());
        }
        Rosters = Server.CloseAdvertiseKeys().ToDictionary();
    }

    public void Share(ISet<int> drop)
    {
        foreach (var (id, roster) in Rosters.Where(r => !drop.Contains(r.Key)))
        {
            // A client that finds too few share holders aborts, which the server sees as a dropout.
            if (TryClient(() => Clients[id].ReceiveRoster(roster), out ShareKeysMessage? message))
            {
                ShareKeys[id] = message!;
                Server.ReceiveShareKeys(message!);
            }
        }
        Forwarded = Server.CloseShareKeys().ToDictionary();
    }

    public void Mask(ISet<int> drop, IReadOnlyDictionary<int, uint[]> inputs, int chunk = 0)
    {
        foreach (var (id, forwarded) in Forwarded.Where(f => !drop.Contains(f.Key)))
        {
            if (!TryClient(() => { Clients[id].ReceiveForwardedShares(forwarded); return true; }, out _))
            {
                continue;
            }
            Masked[id] = Clients[id].MaskInput(inputs[id]);
            if (chunk > 0)
            {
                foreach (MaskedInputChunk c in Masked[id].Chunks(chunk))
                {
                    Server.ReceiveMaskedInputChunk(c);
                }
            }
            else
            {
                Server.ReceiveMaskedInput(Masked[id]);
            }
        }
        Requests = Server.CloseMaskedInput().ToDictionary();
    }

    public uint[] Unmask(ISet<int> drop, int parallelism = 1)
    {
        foreach (var (id, request) in Requests.Where(r => !drop.Contains(r.Key)))
        {
            if (TryClient(() => Clients[id].ReceiveUnmaskRequest(request), out UnmaskResponseMessage? response))
            {
                Responses[id] = response!;
                Server.ReceiveUnmaskResponse(response!);
            }
        }
        return Server.Unmask(parallelism);
    }

    private static bool TryClient<T>(Func<T> step, out T? result)
    {
        try
        {
            result = step();
            return true;
        }
        catch (InsufficientSurvivorsException)
        {
            result = default;
            return false;
        }
    }

    public Dictionary<int, uint[]> RandomInputs()
    {
        uint mask = RingVector.ModulusMask(Parameters.Bits);
        return Parameters.ClientIds.ToDictionary(id => id, id =>
        {
            byte[] bytes = new byte[Parameters.VectorLength * 4];
            Random.Fill(bytes);
            return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(bytes).ToArray().Select(v => v & mask).ToArray();
        });
    }

    public uint[] PlainSum(IEnumerable<int> ids, IReadOnlyDictionary<int, uint[]> inputs)
    {
        uint mask = RingVector.ModulusMask(Parameters.Bits);
        var sum = new uint[Parameters.VectorLength];
        foreach (int id in ids)
        {
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] = (sum[i] + inputs[id][i]) & mask;
            }
        }
        return sum;
    }

    public void Dispose()
    {
        foreach (ClientSession c in Clients.Values)
        {
            c.Dispose();
        }
        Server.Dispose();
        Random.Dispose();
    }
}
