using System.Security.Cryptography;

namespace Federated.Aggregation.SecureAggregation;

public sealed partial class ServerSession
{
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
        var droppedKeys = new List<ECDiffieHellman>();
        var droppedNeighbours = new List<int[]>();
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
                ECDiffieHellman key = SecAggCrypto.FromPrivateScalar(secret);
                droppedKeys.Add(key);
                if (!CryptographicOperations.FixedTimeEquals(SecAggCrypto.ExportPublicKey(key), _advertised[u].MaskPublicKey))
                {
                    FailAndThrow($"reconstructed mask key of client {u} does not match its advertised public key.");
                }
                int[] neighbours = [.. _u3.Where(v => _forwardedSenders[v].Contains(u))];
                droppedNeighbours.Add(neighbours);
                foreach (int v in neighbours.Where(v => !survivorKeys.ContainsKey(v)))
                {
                    // Imported once per survivor: an import costs a good part of an agreement.
                    survivorKeys[v] = SecAggCrypto.TryImportPublicKey(_advertised[v].MaskPublicKey)
                        ?? throw new MalformedMessageException($"advertised mask key of client {v} is not a valid P-256 point.");
                }
            }
            // The |dropped| x |neighbours| key agreements, one dropped client per worker (each has its own key; the
            // survivors' imported keys are only read): on one thread they were about half of the unmasking at d = 2^18.
            var pairMasks = new (MaskPrg Prg, KeystreamOperation Operation)[droppedToRemove.Length][];
            try
            {
                Parallel.For(0, droppedToRemove.Length, new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism }, i =>
                {
                    int u = droppedToRemove[i];
                    var masks = new (MaskPrg, KeystreamOperation)[droppedNeighbours[i].Length];
                    pairMasks[i] = masks;
                    for (int j = 0; j < masks.Length; j++)
                    {
                        int v = droppedNeighbours[i][j];
                        byte[] seed = SecAggCrypto.DeriveSharedKey(droppedKeys[i], survivorKeys[v], maskSeed: true, _parameters.RunId, _parameters.Round, u, v);
                        // v added PRG(s_uv) when v < u and subtracted it otherwise; undo that.
                        masks[j] = (new MaskPrg(seed), v < u ? KeystreamOperation.Subtract : KeystreamOperation.Add);
                        CryptographicOperations.ZeroMemory(seed);
                    }
                });
            }
            catch (AggregateException e) when (e.InnerExceptions.Count > 0)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
            }
            finally
            {
                // In dropped-client order whatever the workers' order; on a failure, whatever was made is disposed below.
                foreach (var masks in pairMasks)
                {
                    generators.AddRange((masks ?? []).Where(m => m.Prg is not null));
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
            foreach (ECDiffieHellman key in droppedKeys)
            {
                key.Dispose();
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
