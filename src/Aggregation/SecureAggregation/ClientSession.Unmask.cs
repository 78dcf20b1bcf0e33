using System.Security.Cryptography;

namespace Federated.Aggregation.SecureAggregation;

public sealed partial class ClientSession
{
    /// <summary>
    /// Stage 4: reveals, for each neighbour, the self-mask-seed share if it survived or the mask-key share if it
    /// dropped, never both: this client answers one unmask request only.
    /// </summary>
    public UnmaskResponseMessage ReceiveUnmaskRequest(UnmaskRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (_revealed)
        {
            throw new ProtocolStageException($"client {_id} already revealed its shares for this round; a second unmask request is refused.");
        }
        RequireStage(SecAggStage.Unmask, "an unmask request");
        CheckReceiver(request.Receiver, "unmask request");
        if (request.Survivors is null || request.Dropped is null)
        {
            throw new MalformedMessageException("unmask request lacks its survivor or dropout list.");
        }
        var survivors = new HashSet<int>();
        foreach (int s in request.Survivors)
        {
            if (!_held.ContainsKey(s) && !_rejected.Contains(s))
            {
                throw new UnknownParticipantException($"unmask request names survivor {s}, whose shares client {_id} does not hold.");
            }
            if (!survivors.Add(s))
            {
                throw new DuplicateMessageException($"unmask request lists survivor {s} twice.");
            }
        }
        var dropped = new HashSet<int>();
        foreach (int s in request.Dropped)
        {
            if (!_held.ContainsKey(s) && !_rejected.Contains(s))
            {
                throw new UnknownParticipantException($"unmask request names dropped client {s}, whose shares client {_id} does not hold.");
            }
            if (survivors.Contains(s))
            {
                throw new MalformedMessageException($"unmask request lists client {s} as both survivor and dropped; revealing both secrets would expose its input.");
            }
            if (!dropped.Add(s))
            {
                throw new DuplicateMessageException($"unmask request lists dropped client {s} twice.");
            }
        }
        if (!survivors.Contains(_id))
        {
            throw new MalformedMessageException($"unmask request does not list client {_id} itself as a survivor; refusing to reveal.");
        }
        if (survivors.Count + dropped.Count != _held.Count + _rejected.Count)
        {
            throw new MalformedMessageException(
                $"unmask request covers {survivors.Count + dropped.Count} clients; client {_id} holds shares of {_held.Count} (and rejected {_rejected.Count}) and needs a verdict on each.");
        }
        if (survivors.Count < _parameters.Threshold)
        {
            throw new InsufficientSurvivorsException(
                $"only {survivors.Count} of client {_id}'s share holders survived, fewer than the threshold {_parameters.Threshold}; nothing revealed.");
        }
        // Peers whose shares this client rejected get nothing revealed: it holds nothing of theirs.
        survivors.ExceptWith(_rejected);
        dropped.ExceptWith(_rejected);
        var seedShares = survivors.Order().Select(s => new RevealedShare(s, (byte[])_held[s].SeedShare.Clone(), (byte[])_held[s].SeedSalt.Clone())).ToList();
        var keyShares = dropped.Order().Select(s => new RevealedShare(s, (byte[])_held[s].KeyShare.Clone(), (byte[])_held[s].KeySalt.Clone())).ToList();
        _revealed = true;
        _stage = SecAggStage.Completed;
        WipeSecrets();
        return new UnmaskResponseMessage(_id, seedShares, keyShares);
    }

    /// <summary>Wipes keys and shares.</summary>
    public void Dispose()
    {
        WipeSecrets();
        _cipherKey.Dispose();
        _maskKey.Dispose();
        CryptographicOperations.ZeroMemory(_maskScalar);
        foreach (Peer p in _roster.Values)
        {
            p.Dispose();
        }
        _roster.Clear();
    }

    /// <summary>Applies every generator to every chunk of the vector, chunk-major so the chunk stays in cache.</summary>
    internal static void ApplyGenerators(uint[] vector, IReadOnlyList<(MaskPrg Prg, KeystreamOperation Operation)> generators, int parallelism)
    {
        int chunks = (vector.Length + MaskChunkElements - 1) / MaskChunkElements;
        void Chunk(int c)
        {
            int start = c * MaskChunkElements;
            Span<uint> span = vector.AsSpan(start, Math.Min(MaskChunkElements, vector.Length - start));
            foreach (var (prg, operation) in generators)
            {
                prg.Apply(start, span, operation);
            }
        }
        if (parallelism == 1)
        {
            for (int c = 0; c < chunks; c++)
            {
                Chunk(c);
            }
        }
        else
        {
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, Chunk);
        }
    }

    private void WipeSecrets()
    {
        CryptographicOperations.ZeroMemory(_selfMaskSeed);
        foreach (HeldShares h in _held.Values)
        {
            h.Dispose();
        }
    }

    private void Fail()
    {
        _stage = SecAggStage.Failed;
        WipeSecrets();
    }

    private bool IsNeighbour(int id) => id != _id && _neighbours.Contains(id);

    private void RequireStage(SecAggStage expected, string what)
    {
        if (_stage != expected)
        {
            throw new ProtocolStageException($"client {_id} is in stage {_stage}; {what} belongs to stage {expected}.");
        }
    }

    private void CheckReceiver(int receiver, string what)
    {
        if (receiver != _id)
        {
            throw new UnknownParticipantException($"{what} is addressed to client {receiver}, not to client {_id}.");
        }
    }

    private byte[] RandomBytes(int count)
    {
        byte[] bytes = new byte[count];
        _random(bytes);
        return bytes;
    }

    private sealed class Peer(int id, PeerPublicKey maskPublicKey, byte[] shareKey) : IDisposable
    {
        public int Id { get; } = id;

        public PeerPublicKey MaskPublicKey { get; } = maskPublicKey;

        public byte[] ShareKey { get; } = shareKey;

        public void Dispose()
        {
            CryptographicOperations.ZeroMemory(ShareKey);
            MaskPublicKey.Dispose();
        }
    }

    private sealed class HeldShares(byte[] seedShare, byte[] keyShare, byte[] seedSalt, byte[] keySalt) : IDisposable
    {
        public byte[] SeedShare { get; } = seedShare;

        public byte[] KeyShare { get; } = keyShare;

        public byte[] SeedSalt { get; } = seedSalt;

        public byte[] KeySalt { get; } = keySalt;

        public static HeldShares ReadFrom(ReadOnlySpan<byte> plaintext)
        {
            const int s = ShamirSecretSharing.ShareBytes;
            const int salt = SecAggCrypto.SaltBytes;
            return new HeldShares(plaintext[..s].ToArray(), plaintext.Slice(s, s).ToArray(), plaintext.Slice(2 * s, salt).ToArray(), plaintext.Slice(2 * s + salt, salt).ToArray());
        }

        public void WriteTo(Span<byte> plaintext)
        {
            const int s = ShamirSecretSharing.ShareBytes;
            SeedShare.CopyTo(plaintext);
            KeyShare.CopyTo(plaintext[s..]);
            SeedSalt.CopyTo(plaintext[(2 * s)..]);
            KeySalt.CopyTo(plaintext[(2 * s + SecAggCrypto.SaltBytes)..]);
        }

        public void Dispose()
        {
            CryptographicOperations.ZeroMemory(SeedShare);
            CryptographicOperations.ZeroMemory(KeyShare);
        }
    }
}
