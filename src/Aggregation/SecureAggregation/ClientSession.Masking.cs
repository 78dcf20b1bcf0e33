using System.Security.Cryptography;

namespace Federated.Aggregation.SecureAggregation;

public sealed partial class ClientSession
{
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
}
