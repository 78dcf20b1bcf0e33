using System.Security.Cryptography;

namespace Federated.Aggregation.SecureAggregation;

/// <summary>Snapshot of the server's protocol state (ids ascending).</summary>
public sealed record ServerSessionState(
    SecAggStage Stage,
    IReadOnlyList<int> Advertised,
    IReadOnlyList<int> SharedKeys,
    IReadOnlyList<int> MaskedInputs,
    IReadOnlyList<int> UnmaskResponders,
    IReadOnlyList<int> ReconstructedSelfMaskSeeds,
    IReadOnlyList<int> ReconstructedMaskKeys,
    string? FailureReason);

/// <summary>
/// The server's side of a SecAgg+ round: collects each stage's messages, closes the stage (the caller decides when,
/// e.g. on a deadline), sums masked inputs chunk by chunk as they stream in (memory O(d + n k)), and removes the
/// masks with the survivors' shares. Not thread-safe: the transport serializes calls. A rejected message throws a
/// <see cref="SecureAggregationException"/> and changes nothing; with fewer than t survivors the round fails and
/// releases nothing.
/// </summary>
public sealed partial class ServerSession : IDisposable
{
    private readonly SecAggParameters _parameters;
    private readonly NeighbourGraph _graph;
    private readonly uint _modulusMask;
    private readonly Dictionary<int, AdvertiseKeysMessage> _advertised = [];
    private readonly HashSet<int> _u1 = [];
    private readonly Dictionary<int, ShareKeysMessage> _shareKeys = [];
    private readonly Dictionary<int, Dictionary<int, ShareCommitment>> _commitments = [];
    private readonly Dictionary<int, int[]> _forwardedSenders = [];
    private readonly Dictionary<int, int> _nextOffset = [];
    private readonly SortedSet<int> _u3 = [];
    private readonly Dictionary<int, UnmaskRequestMessage> _requests = [];
    private readonly Dictionary<int, UnmaskResponseMessage> _responses = [];
    private readonly List<(int Holder, int Owner)> _rejectedShares = [];
    private readonly SortedSet<int> _reconstructedSeeds = [];
    private readonly SortedSet<int> _reconstructedKeys = [];
    private HashSet<int> _u2 = [];
    private uint[]? _accumulator;
    private SecAggStage _stage = SecAggStage.AdvertiseKeys;
    private string? _failure;

    /// <summary>Creates the server session for one round.</summary>
    public ServerSession(SecAggParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        _parameters = parameters;
        _graph = new NeighbourGraph(parameters);
        _modulusMask = RingVector.ModulusMask(parameters.Bits);
    }

    /// <summary>The stage whose messages the server accepts now.</summary>
    public SecAggStage Stage => _stage;

    /// <summary>A snapshot of the state.</summary>
    public ServerSessionState State => new(
        _stage,
        _advertised.Keys.Order().ToArray(),
        _commitments.Keys.Order().ToArray(),
        _u3.ToArray(),
        _responses.Keys.Order().ToArray(),
        _reconstructedSeeds.ToArray(),
        _reconstructedKeys.ToArray(),
        _failure);

    /// <summary>Stage 1: records a client's public keys.</summary>
    public void ReceiveAdvertisement(AdvertiseKeysMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        RequireStage(SecAggStage.AdvertiseKeys, "an advertisement");
        if (!_parameters.ClientIds.Contains(message.Sender))
        {
            throw new UnknownParticipantException($"advertisement from client {message.Sender}, which is not selected for this round.");
        }
        if (_advertised.ContainsKey(message.Sender))
        {
            throw new DuplicateMessageException($"client {message.Sender} already advertised its keys.");
        }
        if (!IsPoint(message.CipherPublicKey) || !IsPoint(message.MaskPublicKey))
        {
            throw new MalformedMessageException($"advertisement from client {message.Sender} needs two {SecAggCrypto.PublicKeyBytes}-byte uncompressed P-256 points.");
        }
        if (message.CipherPublicKey.AsSpan().SequenceEqual(message.MaskPublicKey))
        {
            throw new MalformedMessageException($"client {message.Sender} advertised the same key twice; the cipher and mask keys must differ.");
        }
        _advertised[message.Sender] = message with { CipherPublicKey = (byte[])message.CipherPublicKey.Clone(), MaskPublicKey = (byte[])message.MaskPublicKey.Clone() };
    }

    /// <summary>Ends stage 1; returns each remaining client's roster of neighbour keys.</summary>
    public IReadOnlyDictionary<int, KeyRosterMessage> CloseAdvertiseKeys()
    {
        RequireStage(SecAggStage.AdvertiseKeys, "closing the advertise stage");
        var alive = Prune(_advertised.Keys.ToHashSet(), id => _graph.NeighboursOf(id));
        RequireSurvivors(alive.Count, "advertised keys");
        _u1.UnionWith(alive);
        var rosters = new Dictionary<int, KeyRosterMessage>();
        foreach (int id in _u1.Order())
        {
            var entries = _graph.NeighboursOf(id).Where(_u1.Contains)
                .Select(v => new AdvertisedKeys(v, (byte[])_advertised[v].CipherPublicKey.Clone(), (byte[])_advertised[v].MaskPublicKey.Clone()))
                .ToList();
            rosters[id] = new KeyRosterMessage(id, entries);
        }
        _stage = SecAggStage.ShareKeys;
        return rosters;
    }

    /// <summary>Stage 2: records a client's encrypted shares and share commitments.</summary>
    public void ReceiveShareKeys(ShareKeysMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        RequireStage(SecAggStage.ShareKeys, "shared keys");
        RequireMember(_u1, message.Sender, "shared keys");
        if (_shareKeys.ContainsKey(message.Sender))
        {
            throw new DuplicateMessageException($"client {message.Sender} already sent its shares.");
        }
        if (message.Shares is null || message.Commitments is null)
        {
            throw new MalformedMessageException($"shared keys from client {message.Sender} lack the share or commitment list.");
        }
        var receivers = RosterOf(message.Sender);
        var seen = new HashSet<int>();
        foreach (EncryptedShare? share in message.Shares)
        {
            if (share is null || !receivers.Contains(share.Receiver))
            {
                throw new UnknownParticipantException($"client {message.Sender} sent a share to {share?.Receiver.ToString() ?? "null"}, which is not one of its live neighbours.");
            }
            if (!seen.Add(share.Receiver))
            {
                throw new MalformedMessageException($"client {message.Sender} sent two shares to client {share.Receiver}.");
            }
            if (share.Ciphertext is null || share.Ciphertext.Length != SecAggCrypto.ShareCiphertextBytes)
            {
                throw new MalformedMessageException($"share from {message.Sender} to {share.Receiver} has {share.Ciphertext?.Length ?? 0} bytes; expected {SecAggCrypto.ShareCiphertextBytes}.");
            }
        }
        if (seen.Count != receivers.Count)
        {
            throw new MalformedMessageException($"client {message.Sender} sent {seen.Count} shares; it has {receivers.Count} live neighbours.");
        }
        var commitments = new Dictionary<int, ShareCommitment>();
        foreach (ShareCommitment? c in message.Commitments)
        {
            if (c is null || (c.Holder != message.Sender && !receivers.Contains(c.Holder)))
            {
                throw new UnknownParticipantException($"client {message.Sender} committed to a share for {c?.Holder.ToString() ?? "null"}, which is not a holder.");
            }
            if (c.SelfMaskSeedCommitment is null || c.SelfMaskSeedCommitment.Length != SecAggCrypto.CommitmentBytes
                || c.MaskKeyCommitment is null || c.MaskKeyCommitment.Length != SecAggCrypto.CommitmentBytes)
            {
                throw new MalformedMessageException($"commitments of client {message.Sender} for holder {c.Holder} must be {SecAggCrypto.CommitmentBytes} bytes each.");
            }
            if (!commitments.TryAdd(c.Holder, c))
            {
                throw new MalformedMessageException($"client {message.Sender} committed twice for holder {c.Holder}.");
            }
        }
        if (commitments.Count != receivers.Count + 1)
        {
            throw new MalformedMessageException($"client {message.Sender} sent {commitments.Count} commitments; expected {receivers.Count + 1} (neighbours and itself).");
        }
        _shareKeys[message.Sender] = message;
        _commitments[message.Sender] = commitments;
    }

    /// <summary>Ends stage 2; returns the ciphertexts to forward to each remaining client.</summary>
    public IReadOnlyDictionary<int, ForwardedSharesMessage> CloseShareKeys()
    {
        RequireStage(SecAggStage.ShareKeys, "closing the share-keys stage");
        // A client whose live holders fall below t could never be unmasked: leave it out before masks are set.
        var alive = Prune(_shareKeys.Keys.ToHashSet(), id => RosterOf(id));
        RequireSurvivors(alive.Count, "shared keys");
        _u2 = alive;
        var forwarded = new Dictionary<int, ForwardedSharesMessage>();
        foreach (int v in _u2.Order())
        {
            int[] senders = RosterOf(v).Where(_u2.Contains).Order().ToArray();
            _forwardedSenders[v] = senders;
            var shares = senders.Select(u => new ForwardedShare(u, _shareKeys[u].Shares.First(s => s.Receiver == v).Ciphertext)).ToList();
            forwarded[v] = new ForwardedSharesMessage(v, shares);
        }
        _shareKeys.Clear(); // ciphertexts are forwarded; only the commitments stay
        foreach (int gone in _commitments.Keys.Where(k => !_u2.Contains(k)).ToArray())
        {
            _commitments.Remove(gone);
        }
        _accumulator = new uint[_parameters.VectorLength];
        _stage = SecAggStage.MaskedInput;
        return forwarded;
    }
}
