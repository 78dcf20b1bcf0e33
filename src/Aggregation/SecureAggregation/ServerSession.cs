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
public sealed class ServerSession : IDisposable
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

    /// <summary>Stage 3: adds a whole masked input.</summary>
    public void ReceiveMaskedInput(MaskedInputMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        RequireStage(SecAggStage.MaskedInput, "a masked input");
        RequireMember(_u2, message.Sender, "a masked input");
        if (message.MaskedInput is null || message.MaskedInput.Length != _parameters.VectorLength)
        {
            throw new MalformedMessageException($"masked input from client {message.Sender} has length {message.MaskedInput?.Length ?? 0}; expected {_parameters.VectorLength}.");
        }
        if (_nextOffset.GetValueOrDefault(message.Sender) != 0)
        {
            throw new DuplicateMessageException($"client {message.Sender} already streamed part of its masked input.");
        }
        ReceiveMaskedInputChunk(new MaskedInputChunk(message.Sender, 0, message.MaskedInput));
    }

    /// <summary>Stage 3 streamed: adds the next chunk of a client's masked input (chunks arrive in order).</summary>
    public void ReceiveMaskedInputChunk(MaskedInputChunk chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        RequireStage(SecAggStage.MaskedInput, "a masked input");
        RequireMember(_u2, chunk.Sender, "a masked input");
        if (_u3.Contains(chunk.Sender))
        {
            throw new DuplicateMessageException($"client {chunk.Sender} already sent its whole masked input.");
        }
        int expected = _nextOffset.GetValueOrDefault(chunk.Sender);
        if (chunk.Offset != expected)
        {
            throw new MalformedMessageException($"masked input chunk from client {chunk.Sender} starts at {chunk.Offset}; expected {expected}.");
        }
        if (chunk.Values.Length == 0 || chunk.Values.Length > _parameters.VectorLength - expected)
        {
            throw new MalformedMessageException(
                $"masked input chunk from client {chunk.Sender} has {chunk.Values.Length} values; between 1 and {_parameters.VectorLength - expected} remain.");
        }
        Span<uint> target = _accumulator.AsSpan(expected, chunk.Values.Length);
        ReadOnlySpan<uint> values = chunk.Values.Span;
        if (RingVector.AddInPlaceCheckingRange(target, values, _modulusMask) != 0)
        {
            RingVector.SubtractInPlace(target, values); // undo: a rejected chunk leaves the sum untouched
            throw new MalformedMessageException($"masked input chunk from client {chunk.Sender} has values outside Z_(2^{_parameters.Bits}).");
        }
        int next = expected + values.Length;
        _nextOffset[chunk.Sender] = next;
        if (next == _parameters.VectorLength)
        {
            _u3.Add(chunk.Sender);
        }
    }

    /// <summary>Ends stage 3; returns each survivor's unmask request.</summary>
    public IReadOnlyDictionary<int, UnmaskRequestMessage> CloseMaskedInput()
    {
        RequireStage(SecAggStage.MaskedInput, "closing the masked-input stage");
        int[] partial = _nextOffset.Where(kv => kv.Value > 0 && kv.Value < _parameters.VectorLength).Select(kv => kv.Key).Order().ToArray();
        if (partial.Length > 0)
        {
            // A half-added vector cannot be taken out of the running sum without keeping it (O(n d) memory).
            Fail($"clients {string.Join(", ", partial)} stopped part-way through their masked input; their partial sums cannot be separated, so the round fails.");
            throw new SecureAggregationException(_failure!);
        }
        RequireSurvivors(_u3.Count, "masked inputs");
        var requests = new Dictionary<int, UnmaskRequestMessage>();
        foreach (int v in _u3)
        {
            int[] holders = _forwardedSenders[v];
            var survivors = holders.Where(_u3.Contains).Append(v).Order().ToArray();
            var dropped = holders.Where(u => !_u3.Contains(u)).ToArray();
            requests[v] = new UnmaskRequestMessage(v, survivors, dropped);
        }
        foreach (var (id, request) in requests)
        {
            _requests[id] = request;
        }
        _stage = SecAggStage.Unmask;
        return requests;
    }

    /// <summary>Stage 4: records a client's revealed shares after checking each against its dealer's commitment.</summary>
    public void ReceiveUnmaskResponse(UnmaskResponseMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        RequireStage(SecAggStage.Unmask, "an unmask response");
        if (!_requests.TryGetValue(message.Sender, out UnmaskRequestMessage? request))
        {
            throw new UnknownParticipantException($"unmask response from client {message.Sender}, which was not asked (not a survivor).");
        }
        if (_responses.ContainsKey(message.Sender))
        {
            throw new DuplicateMessageException($"client {message.Sender} already answered the unmask request.");
        }
        // Only the shares that match their dealer's commitment are kept: a share that does not (a poisoned commitment,
        // or a holder's lie) is dropped and reported, not the whole response, so one hostile party cannot make the
        // server refuse an honest holder. Any t verified shares reconstruct a secret.
        List<RevealedShare> seeds = CheckRevealed(message.Sender, message.SelfMaskSeedShares, request.Survivors, SecAggCrypto.ShareKind.SelfMaskSeed);
        List<RevealedShare> keys = CheckRevealed(message.Sender, message.MaskKeyShares, request.Dropped, SecAggCrypto.ShareKind.MaskKey);
        _responses[message.Sender] = message with { SelfMaskSeedShares = seeds, MaskKeyShares = keys };
    }

    /// <summary>Revealed shares the server dropped because they did not match their dealer's commitment: (holder, owner).</summary>
    public IReadOnlyList<(int Holder, int Owner)> RejectedShares => _rejectedShares;

    /// <summary>
    /// Ends stage 4: reconstructs the survivors' self-mask seeds and the dropped clients' mask keys, removes every
    /// mask, and releases the sum of the survivors' inputs in Z_(2^b). Throws <see cref="InsufficientSurvivorsException"/>
    /// (and releases nothing) when some secret has fewer than t verified shares.
    /// </summary>
    public uint[] Unmask(int maxDegreeOfParallelism = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDegreeOfParallelism, 1);
        RequireStage(SecAggStage.Unmask, "unmasking");
        RequireSurvivors(_responses.Count, "unmask responses");
        int t = _parameters.Threshold;

        var seedShares = Collect(r => r.SelfMaskSeedShares);
        var keyShares = Collect(r => r.MaskKeyShares);
        foreach (int u in _u3)
        {
            if (seedShares.GetValueOrDefault(u)?.Count is not int c || c < t)
            {
                FailAndThrow($"client {u}'s self-mask seed has {seedShares.GetValueOrDefault(u)?.Count ?? 0} verified shares, fewer than the threshold {t}; nothing is released.");
            }
        }
        int[] droppedToRemove = _u2.Where(u => !_u3.Contains(u) && keyShares.ContainsKey(u)).Order().ToArray();
        foreach (int u in droppedToRemove)
        {
            if (keyShares[u].Count < t)
            {
                FailAndThrow($"dropped client {u}'s mask key has {keyShares[u].Count} verified shares, fewer than the threshold {t}; nothing is released.");
            }
        }

        var generators = new List<(MaskPrg Prg, KeystreamOperation Operation)>();
        byte[] secret = new byte[ShamirSecretSharing.SecretBytes];
        var lagrange = new Dictionary<string, UInt128[]>(StringComparer.Ordinal);
        var survivorKeys = new Dictionary<int, PeerPublicKey>();
        try
        {
            foreach (int u in _u3)
            {
                Reconstruct(seedShares[u], t, secret, u, lagrange);
                MarkReconstructed(u, selfMaskSeed: true);
                generators.Add((new MaskPrg(secret), KeystreamOperation.Subtract));
            }
            foreach (int u in droppedToRemove)
            {
                Reconstruct(keyShares[u], t, secret, u, lagrange);
                MarkReconstructed(u, selfMaskSeed: false);
                using ECDiffieHellman key = SecAggCrypto.FromPrivateScalar(secret);
                if (!CryptographicOperations.FixedTimeEquals(SecAggCrypto.ExportPublicKey(key), _advertised[u].MaskPublicKey))
                {
                    FailAndThrow($"reconstructed mask key of client {u} does not match its advertised public key.");
                }
                foreach (int v in _u3.Where(v => _forwardedSenders[v].Contains(u)))
                {
                    if (!survivorKeys.TryGetValue(v, out var peer))
                    {
                        // Imported once per survivor: an import costs a good part of an agreement.
                        survivorKeys[v] = peer = SecAggCrypto.TryImportPublicKey(_advertised[v].MaskPublicKey)
                            ?? throw new MalformedMessageException($"advertised mask key of client {v} is not a valid P-256 point.");
                    }
                    byte[] seed = SecAggCrypto.DeriveSharedKey(key, peer, maskSeed: true, _parameters.RunId, _parameters.Round, u, v);
                    // v added PRG(s_uv) when v < u and subtracted it otherwise; undo that.
                    generators.Add((new MaskPrg(seed), v < u ? KeystreamOperation.Subtract : KeystreamOperation.Add));
                    CryptographicOperations.ZeroMemory(seed);
                }
            }
            uint[] result = _accumulator!;
            ClientSession.ApplyGenerators(result, generators, maxDegreeOfParallelism);
            RingVector.Reduce(result, _parameters.Bits);
            _accumulator = null;
            _stage = SecAggStage.Completed;
            return result;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
            foreach (PeerPublicKey peer in survivorKeys.Values)
            {
                peer.Dispose();
            }
            foreach (var (prg, _) in generators)
            {
                prg.Dispose();
            }
        }
    }

    /// <summary>Wipes the running sum.</summary>
    public void Dispose()
    {
        if (_accumulator is not null)
        {
            Array.Clear(_accumulator);
            _accumulator = null;
        }
    }

    private void MarkReconstructed(int client, bool selfMaskSeed)
    {
        // Invariant of the protocol: both secrets of one client would reveal its input.
        if ((selfMaskSeed ? _reconstructedKeys : _reconstructedSeeds).Contains(client))
        {
            throw new InvalidOperationException($"refusing to reconstruct both the self-mask seed and the mask key of client {client}.");
        }
        (selfMaskSeed ? _reconstructedSeeds : _reconstructedKeys).Add(client);
    }

    private void Reconstruct(List<(int Holder, byte[] Share)> shares, int t, byte[] secret, int owner, Dictionary<string, UInt128[]> lagrange)
    {
        // Any t verified shares determine the secret; taking the lowest holder ids makes most secrets share one
        // holder set, whose Lagrange coefficients are then computed once.
        var chosen = shares.OrderBy(s => s.Holder).Take(t).ToList();
        int[] xs = chosen.Select(s => s.Holder).ToArray();
        string setKey = string.Join(',', xs);
        if (!lagrange.TryGetValue(setKey, out UInt128[]? lambdas))
        {
            lagrange[setKey] = lambdas = ShamirSecretSharing.LagrangeAtZero(xs);
        }
        try
        {
            ShamirSecretSharing.Reconstruct(xs, lambdas, chosen.Select(s => s.Share).ToList(), secret);
        }
        catch (CryptographicException e)
        {
            FailAndThrow($"shares of client {owner} do not reconstruct a valid secret: {e.Message}");
        }
    }

    private Dictionary<int, List<(int Holder, byte[] Share)>> Collect(Func<UnmaskResponseMessage, IReadOnlyList<RevealedShare>> select)
    {
        var result = new Dictionary<int, List<(int, byte[])>>();
        foreach (var (holder, response) in _responses.OrderBy(kv => kv.Key))
        {
            foreach (RevealedShare share in select(response))
            {
                if (!result.TryGetValue(share.Owner, out var list))
                {
                    result[share.Owner] = list = [];
                }
                list.Add((holder, share.Share));
            }
        }
        return result;
    }

    // A holder may reveal fewer shares than requested (it rejected a hostile dealer's ciphertext and holds nothing of it),
    // never one that was not requested or two of one owner.
    private List<RevealedShare> CheckRevealed(int sender, IReadOnlyList<RevealedShare>? shares, IReadOnlyList<int> expected, SecAggCrypto.ShareKind kind)
    {
        string what = kind == SecAggCrypto.ShareKind.SelfMaskSeed ? "self-mask-seed" : "mask-key";
        if (shares is null || shares.Count > expected.Count)
        {
            throw new MalformedMessageException($"client {sender} revealed {shares?.Count ?? 0} {what} shares; at most {expected.Count} were requested.");
        }
        var verified = new List<RevealedShare>(shares.Count);
        var rejected = new List<(int, int)>();
        var wanted = expected.ToHashSet();
        var seen = new HashSet<int>();
        foreach (RevealedShare? share in shares)
        {
            if (share is null || !wanted.Contains(share.Owner))
            {
                throw new UnknownParticipantException($"client {sender} revealed a {what} share of {share?.Owner.ToString() ?? "null"}, which was not requested.");
            }
            if (!seen.Add(share.Owner))
            {
                throw new MalformedMessageException($"client {sender} revealed two {what} shares of client {share.Owner}.");
            }
            if (share.Share is null || !ShamirSecretSharing.IsWellFormed(share.Share) || share.Salt is null || share.Salt.Length != SecAggCrypto.SaltBytes)
            {
                throw new MalformedMessageException($"{what} share of client {share.Owner} from client {sender} must be {ShamirSecretSharing.ShareBytes} bytes of field elements and a {SecAggCrypto.SaltBytes}-byte salt.");
            }
            ShareCommitment commitment = _commitments[share.Owner][sender];
            byte[] actual = SecAggCrypto.Commit(_parameters.RunId, _parameters.Round, share.Owner, sender, kind, share.Salt, share.Share);
            byte[] committed = kind == SecAggCrypto.ShareKind.SelfMaskSeed ? commitment.SelfMaskSeedCommitment : commitment.MaskKeyCommitment;
            if (CryptographicOperations.FixedTimeEquals(actual, committed))
            {
                verified.Add(share);
            }
            else
            {
                rejected.Add((sender, share.Owner));
            }
        }
        _rejectedShares.AddRange(rejected);
        return verified;
    }

    private HashSet<int> RosterOf(int id) => _graph.NeighboursOf(id).Where(_u1.Contains).ToHashSet();

    // Drops, until none is left, every client with fewer than t share holders (live neighbours plus itself).
    private HashSet<int> Prune(HashSet<int> alive, Func<int, IEnumerable<int>> neighbours)
    {
        bool changed = true;
        while (changed)
        {
            changed = false;
            foreach (int id in alive.ToArray())
            {
                if (neighbours(id).Count(alive.Contains) + 1 < _parameters.Threshold)
                {
                    alive.Remove(id);
                    changed = true;
                }
            }
        }
        return alive;
    }

    private void RequireSurvivors(int count, string what)
    {
        if (count < _parameters.Threshold)
        {
            FailAndThrow($"only {count} clients sent {what}, fewer than the threshold {_parameters.Threshold}; the round fails and nothing is released.");
        }
    }

    private void FailAndThrow(string reason)
    {
        Fail(reason);
        throw new InsufficientSurvivorsException(reason);
    }

    private void Fail(string reason)
    {
        _failure = reason;
        _stage = SecAggStage.Failed;
        Dispose();
    }

    private void RequireStage(SecAggStage expected, string what)
    {
        if (_stage != expected)
        {
            throw new ProtocolStageException($"server is in stage {_stage}; {what} belongs to stage {expected}.");
        }
    }

    private static void RequireMember(HashSet<int> set, int sender, string what)
    {
        if (!set.Contains(sender))
        {
            throw new UnknownParticipantException($"{what} from client {sender}, which is not a live participant of this stage.");
        }
    }

    // On the curve, not only the right length: an off-curve key would make every honest neighbour fail its key
    // agreement (and the server's at unmasking), so one participant could sink the round.
    private static bool IsPoint(byte[]? key)
    {
        if (key is null || key.Length != SecAggCrypto.PublicKeyBytes || key[0] != 0x04)
        {
            return false;
        }
        using PeerPublicKey? imported = SecAggCrypto.TryImportPublicKey(key);
        return imported is not null;
    }
}
