using System.Security.Cryptography;

namespace Federated.Aggregation.SecureAggregation;

/// <summary>Snapshot of a client's protocol state.</summary>
public sealed record ClientSessionState(
    SecAggStage Stage,
    int ClientId,
    IReadOnlyList<int> Neighbours,
    IReadOnlyList<int> RosterNeighbours,
    IReadOnlyList<int> MaskingPeers,
    bool SharesReceived,
    bool SharesRevealed,
    IReadOnlyList<int> RejectedPeers);

/// <summary>
/// One client's side of a SecAgg+ round (Bonawitz et al. 2017, Fig. 4, with the neighbour graph of Bell et al.
/// 2020): advertise keys, share keys, masked input, unmask. Not thread-safe: the transport calls it in order.
/// A rejected message throws a <see cref="SecureAggregationException"/> and leaves the state unchanged.
/// </summary>
public sealed class ClientSession : IDisposable
{
    private const int MaskChunkElements = 16 * 1024;

    private readonly SecAggParameters _parameters;
    private readonly int _id;
    private readonly SecureRandomFill _random;
    private readonly int _parallelism;
    private readonly IReadOnlyList<int> _neighbours;
    private readonly ECDiffieHellman _cipherKey;
    private readonly ECDiffieHellman _maskKey;
    private readonly byte[] _maskScalar;
    private readonly byte[] _cipherPublic;
    private readonly byte[] _maskPublic;
    private readonly byte[] _selfMaskSeed = new byte[MaskPrg.SeedBytes];
    private readonly Dictionary<int, Peer> _roster = [];
    private readonly SortedDictionary<int, HeldShares> _held = [];
    private readonly SortedSet<int> _rejected = [];
    private SecAggStage _stage = SecAggStage.AdvertiseKeys;
    private bool _advertised;
    private bool _sharesReceived;
    private bool _revealed;

    /// <summary>Creates the session and its two ephemeral key pairs from the injected randomness.</summary>
    /// <param name="parameters">Round parameters, the same at every party.</param>
    /// <param name="clientId">This client's id; must be one of the round's clients.</param>
    /// <param name="random">Secure random source; defaults to <see cref="RandomNumberGenerator.Fill"/>.</param>
    /// <param name="maxDegreeOfParallelism">Threads for key agreements and masking (1 = this thread only).</param>
    public ClientSession(SecAggParameters parameters, int clientId, SecureRandomFill? random = null, int maxDegreeOfParallelism = 1)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDegreeOfParallelism, 1);
        if (!parameters.ClientIds.Contains(clientId))
        {
            throw new ArgumentOutOfRangeException(nameof(clientId), clientId, "clientId is not one of the round's clients.");
        }
        _parameters = parameters;
        _id = clientId;
        _random = random ?? RandomNumberGenerator.Fill;
        _parallelism = maxDegreeOfParallelism;
        _neighbours = new NeighbourGraph(parameters).NeighboursOf(clientId);
        _cipherKey = SecAggCrypto.GenerateKeyPair(_random, out byte[] cipherScalar);
        CryptographicOperations.ZeroMemory(cipherScalar);
        _maskKey = SecAggCrypto.GenerateKeyPair(_random, out _maskScalar);
        _cipherPublic = SecAggCrypto.ExportPublicKey(_cipherKey);
        _maskPublic = SecAggCrypto.ExportPublicKey(_maskKey);
    }

    /// <summary>The client's id.</summary>
    public int ClientId => _id;

    /// <summary>The stage whose input the client expects next.</summary>
    public SecAggStage Stage => _stage;

    /// <summary>A snapshot of the state.</summary>
    public ClientSessionState State => new(
        _stage, _id, _neighbours, _roster.Keys.Order().ToArray(), MaskingPeers(), _sharesReceived, _revealed, _rejected.ToArray());

    private int[] MaskingPeers() => [.. _held.Keys.Where(k => k != _id).Concat(_rejected).Order()];

    /// <summary>Stage 1: the public keys to send to the server.</summary>
    public AdvertiseKeysMessage AdvertiseKeys()
    {
        RequireStage(SecAggStage.AdvertiseKeys, "advertise keys");
        _advertised = true;
        _stage = SecAggStage.ShareKeys;
        return new AdvertiseKeysMessage(_id, (byte[])_cipherPublic.Clone(), (byte[])_maskPublic.Clone());
    }

    /// <summary>Stage 2: takes the neighbours' keys and returns this client's encrypted shares.</summary>
    public ShareKeysMessage ReceiveRoster(KeyRosterMessage roster)
    {
        ArgumentNullException.ThrowIfNull(roster);
        RequireStage(SecAggStage.ShareKeys, "a key roster");
        if (!_advertised)
        {
            throw new ProtocolStageException("a key roster arrived before this client advertised its keys.");
        }
        CheckReceiver(roster.Receiver, "key roster");
        if (roster.Neighbours is null)
        {
            throw new MalformedMessageException("key roster has no neighbour list.");
        }
        var seen = new HashSet<int>();
        foreach (AdvertisedKeys? entry in roster.Neighbours)
        {
            if (entry is null)
            {
                throw new MalformedMessageException("key roster contains a null entry.");
            }
            if (!IsNeighbour(entry.ClientId))
            {
                throw new UnknownParticipantException($"key roster names client {entry.ClientId}, which is not a neighbour of client {_id}.");
            }
            if (!seen.Add(entry.ClientId))
            {
                throw new DuplicateMessageException($"key roster lists client {entry.ClientId} twice.");
            }
        }
        if (roster.Neighbours.Count + 1 < _parameters.Threshold)
        {
            Fail();
            throw new InsufficientSurvivorsException(
                $"client {_id} has {roster.Neighbours.Count + 1} share holders (itself included), fewer than the threshold {_parameters.Threshold}.");
        }
        var peers = new Peer?[roster.Neighbours.Count];
        string? error = null;
        Parallel.For(0, peers.Length, new ParallelOptions { MaxDegreeOfParallelism = _parallelism }, i =>
        {
            AdvertisedKeys entry = roster.Neighbours[i];
            // Each advertised key is imported (and validated) once: the cipher key for the share key now, the mask
            // key kept for the mask seed at masking time.
            using PeerPublicKey? cipher = SecAggCrypto.TryImportPublicKey(entry.CipherPublicKey);
            PeerPublicKey? mask = SecAggCrypto.TryImportPublicKey(entry.MaskPublicKey);
            if (cipher is null || mask is null)
            {
                mask?.Dispose();
                error = $"key roster entry for client {entry.ClientId} is not a pair of valid uncompressed P-256 points.";
                return;
            }
            byte[] shareKey = SecAggCrypto.DeriveSharedKey(_cipherKey, cipher, maskSeed: false, _parameters.RunId, _parameters.Round, _id, entry.ClientId);
            peers[i] = new Peer(entry.ClientId, mask, shareKey);
        });
        if (error is not null)
        {
            foreach (Peer? p in peers)
            {
                p?.Dispose();
            }
            throw new MalformedMessageException(error);
        }

        // Holders of this client's shares: its neighbours that advertised, and itself.
        int[] holders = peers.Select(p => p!.Id).Append(_id).Order().ToArray();
        _random(_selfMaskSeed);
        byte[][] seedShares = ShamirSecretSharing.Split(_selfMaskSeed, _parameters.Threshold, holders, _random);
        byte[][] keyShares = ShamirSecretSharing.Split(_maskScalar, _parameters.Threshold, holders, _random);
        var encrypted = new List<EncryptedShare>(peers.Length);
        var commitments = new List<ShareCommitment>(holders.Length);
        byte[] plaintext = new byte[SecAggCrypto.SharePlaintextBytes];
        try
        {
            for (int h = 0; h < holders.Length; h++)
            {
                var held = new HeldShares(seedShares[h], keyShares[h], RandomBytes(SecAggCrypto.SaltBytes), RandomBytes(SecAggCrypto.SaltBytes));
                commitments.Add(new ShareCommitment(
                    holders[h],
                    SecAggCrypto.Commit(_parameters.RunId, _parameters.Round, _id, holders[h], SecAggCrypto.ShareKind.SelfMaskSeed, held.SeedSalt, held.SeedShare),
                    SecAggCrypto.Commit(_parameters.RunId, _parameters.Round, _id, holders[h], SecAggCrypto.ShareKind.MaskKey, held.KeySalt, held.KeyShare)));
                if (holders[h] == _id)
                {
                    _held[_id] = held;
                    continue;
                }
                held.WriteTo(plaintext);
                Peer peer = peers.First(p => p!.Id == holders[h])!;
                encrypted.Add(new EncryptedShare(holders[h], SecAggCrypto.EncryptShares(peer.ShareKey, _parameters.RunId, _parameters.Round, _id, holders[h], plaintext)));
                held.Dispose();
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
        }
        foreach (Peer? p in peers)
        {
            _roster[p!.Id] = p;
        }
        _stage = SecAggStage.MaskedInput;
        return new ShareKeysMessage(_id, encrypted, commitments);
    }

    /// <summary>Stage 3 input: the ciphertexts neighbours sent this client; each is authenticated before any is kept.</summary>
    public void ReceiveForwardedShares(ForwardedSharesMessage forwarded)
    {
        ArgumentNullException.ThrowIfNull(forwarded);
        RequireStage(SecAggStage.MaskedInput, "forwarded shares");
        if (_sharesReceived)
        {
            throw new DuplicateMessageException($"client {_id} already received its forwarded shares.");
        }
        CheckReceiver(forwarded.Receiver, "forwarded shares");
        if (forwarded.Shares is null)
        {
            throw new MalformedMessageException("forwarded shares message has no share list.");
        }
        var decrypted = new SortedDictionary<int, HeldShares>();
        var rejected = new SortedSet<int>();
        byte[] plaintext = new byte[SecAggCrypto.SharePlaintextBytes];
        bool success = false;
        try
        {
            foreach (ForwardedShare? share in forwarded.Shares)
            {
                if (share is null)
                {
                    throw new MalformedMessageException("forwarded shares contain a null entry.");
                }
                if (!_roster.TryGetValue(share.Sender, out Peer? peer))
                {
                    throw new UnknownParticipantException($"forwarded share from client {share.Sender}, which is not in client {_id}'s roster.");
                }
                if (decrypted.ContainsKey(share.Sender))
                {
                    throw new DuplicateMessageException($"forwarded shares contain two ciphertexts from client {share.Sender}.");
                }
                if (share.Ciphertext is null || share.Ciphertext.Length != SecAggCrypto.ShareCiphertextBytes)
                {
                    throw new MalformedMessageException(
                        $"ciphertext from client {share.Sender} has {share.Ciphertext?.Length ?? 0} bytes; expected {SecAggCrypto.ShareCiphertextBytes}.");
                }
                if (rejected.Contains(share.Sender))
                {
                    throw new DuplicateMessageException($"forwarded shares contain two ciphertexts from client {share.Sender}.");
                }
                // A peer whose ciphertext fails authentication, or whose shares are not field elements, is a dropout for
                // this client (it will reveal nothing of that peer), not a reason to leave the round: one hostile peer
                // must not stop honest clients. Its pairwise mask stays, since it comes from the roster keys alone.
                if (!SecAggCrypto.TryDecryptShares(peer.ShareKey, _parameters.RunId, _parameters.Round, share.Sender, _id, share.Ciphertext, plaintext))
                {
                    rejected.Add(share.Sender);
                    continue;
                }
                var held = HeldShares.ReadFrom(plaintext);
                if (!ShamirSecretSharing.IsWellFormed(held.SeedShare) || !ShamirSecretSharing.IsWellFormed(held.KeyShare))
                {
                    held.Dispose();
                    rejected.Add(share.Sender);
                    continue;
                }
                decrypted[share.Sender] = held;
            }
            if (decrypted.Count + 1 < _parameters.Threshold)
            {
                success = true; // the shares are valid; the round is what fails
                foreach (HeldShares h in decrypted.Values)
                {
                    h.Dispose();
                }
                Fail();
                throw new InsufficientSurvivorsException(
                    $"client {_id} got shares from {decrypted.Count} neighbours; with itself that is below the threshold {_parameters.Threshold}.");
            }
            success = true;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(plaintext);
            if (!success)
            {
                foreach (HeldShares h in decrypted.Values)
                {
                    h.Dispose();
                }
            }
        }
        foreach (var (sender, held) in decrypted)
        {
            _held[sender] = held;
        }
        _rejected.UnionWith(rejected);
        _sharesReceived = true;
    }

    /// <summary>Stage 3: masks the input (values in Z_(2^b), length d) for the server.</summary>
    public MaskedInputMessage MaskInput(ReadOnlySpan<uint> input)
    {
        uint[] masked = input.ToArray();
        MaskInPlace(masked);
        return new MaskedInputMessage(_id, masked);
    }

    /// <summary>
    /// Stage 3 without a copy: masks <paramref name="input"/> (length d, values in Z_(2^b)) where it lies, so a client
    /// holds one ring buffer from its encoded update to the upload. Same checks and stage rules as <see cref="MaskInput"/>.
    /// </summary>
    public void MaskInPlace(uint[] input)
    {
        ArgumentNullException.ThrowIfNull(input);
        RequireStage(SecAggStage.MaskedInput, "masking the input");
        if (!_sharesReceived)
        {
            throw new ProtocolStageException($"client {_id} must receive its forwarded shares before masking.");
        }
        if (input.Length != _parameters.VectorLength)
        {
            throw new ArgumentException($"input has length {input.Length}; the round's vector length is {_parameters.VectorLength}.", nameof(input));
        }
        if (!RingVector.AllInRing(input, _parameters.Bits))
        {
            throw new ArgumentOutOfRangeException(nameof(input), $"input has values outside Z_(2^{_parameters.Bits}).");
        }

        // Pairwise masks with the neighbours whose shares the server forwarded (its U2 restricted to them), rejected ones
        // included: they mask with this client, so the pair's masks cancel in the sum either way.
        int[] peers = MaskingPeers();
        var seeds = new byte[peers.Length][];
        Parallel.For(0, peers.Length, new ParallelOptions { MaxDegreeOfParallelism = _parallelism }, i =>
        {
            Peer peer = _roster[peers[i]];
            seeds[i] = SecAggCrypto.DeriveSharedKey(_maskKey, peer.MaskPublicKey, maskSeed: true, _parameters.RunId, _parameters.Round, _id, peer.Id);
        });
        var generators = new List<(MaskPrg Prg, KeystreamOperation Operation)>(peers.Length + 1);
        try
        {
            generators.Add((new MaskPrg(_selfMaskSeed), KeystreamOperation.Add));
            for (int i = 0; i < peers.Length; i++)
            {
                // y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv) (Bonawitz et al. 2017, 4).
                generators.Add((new MaskPrg(seeds[i]), _id < peers[i] ? KeystreamOperation.Add : KeystreamOperation.Subtract));
            }
            ApplyGenerators(input, generators, _parallelism);
            RingVector.Reduce(input, _parameters.Bits);
        }
        finally
        {
            foreach (var (prg, _) in generators)
            {
                prg.Dispose();
            }
            foreach (byte[] seed in seeds)
            {
                if (seed is not null)
                {
                    CryptographicOperations.ZeroMemory(seed);
                }
            }
        }
        _stage = SecAggStage.Unmask;
    }

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
