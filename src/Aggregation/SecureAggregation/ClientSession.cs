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
public sealed partial class ClientSession : IDisposable
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
}
