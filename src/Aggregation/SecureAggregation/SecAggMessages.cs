namespace Federated.Aggregation.SecureAggregation;

// Messages of the four SecAgg+ stages. Byte arrays are the wire payloads; WireBytes counts the payload bytes a
// transport must carry (ids and offsets as 4 or 8 bytes), used for the communication-expansion figure.

/// <summary>Stage 1, client to server: the client's two ephemeral P-256 public keys (share encryption, masks).</summary>
public sealed record AdvertiseKeysMessage(int Sender, byte[] CipherPublicKey, byte[] MaskPublicKey)
{
    /// <summary>Payload bytes on the wire.</summary>
    public long WireBytes => 4 + (CipherPublicKey?.Length ?? 0) + (MaskPublicKey?.Length ?? 0);
}

/// <summary>One neighbour's advertised keys as forwarded by the server.</summary>
public sealed record AdvertisedKeys(int ClientId, byte[] CipherPublicKey, byte[] MaskPublicKey);

/// <summary>Stage 1 result, server to one client: the keys of its neighbours that advertised.</summary>
public sealed record KeyRosterMessage(int Receiver, IReadOnlyList<AdvertisedKeys> Neighbours);

/// <summary>One share ciphertext, AES-GCM under the pair's share key.</summary>
public sealed record EncryptedShare(int Receiver, byte[] Ciphertext);

/// <summary>The dealer's commitments to the two shares a holder gets (the holder may be the dealer itself).</summary>
public sealed record ShareCommitment(int Holder, byte[] SelfMaskSeedCommitment, byte[] MaskKeyCommitment);

/// <summary>Stage 2, client to server: encrypted shares for each neighbour, and commitments to every share.</summary>
public sealed record ShareKeysMessage(int Sender, IReadOnlyList<EncryptedShare> Shares, IReadOnlyList<ShareCommitment> Commitments)
{
    /// <summary>Payload bytes on the wire.</summary>
    public long WireBytes => 4 + (Shares?.Sum(s => 4L + (s.Ciphertext?.Length ?? 0)) ?? 0) + (Commitments?.Sum(c => 4L + (c.SelfMaskSeedCommitment?.Length ?? 0) + (c.MaskKeyCommitment?.Length ?? 0)) ?? 0);
}

/// <summary>A ciphertext forwarded by the server to its receiver.</summary>
public sealed record ForwardedShare(int Sender, byte[] Ciphertext);

/// <summary>Stage 2 result, server to one client: the ciphertexts its neighbours sent it.</summary>
public sealed record ForwardedSharesMessage(int Receiver, IReadOnlyList<ForwardedShare> Shares);

/// <summary>Stage 3, client to server: the masked input y = x + PRG(b) + sum of +/-PRG(s_uv), in Z_(2^b).</summary>
public sealed record MaskedInputMessage(int Sender, uint[] MaskedInput)
{
    /// <summary>Payload bytes on the wire (4 bytes per element).</summary>
    public long WireBytes => 4 + 4L * (MaskedInput?.Length ?? 0);

    /// <summary>Splits the vector into chunks for streaming to the server.</summary>
    public IEnumerable<MaskedInputChunk> Chunks(int chunkLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkLength, 1);
        for (int offset = 0; offset < MaskedInput.Length; offset += chunkLength)
        {
            int length = Math.Min(chunkLength, MaskedInput.Length - offset);
            yield return new MaskedInputChunk(Sender, offset, new ReadOnlyMemory<uint>(MaskedInput, offset, length));
        }
    }
}

/// <summary>Stage 3 streamed: elements [Offset, Offset + Values.Length) of a client's masked input, sent in order.</summary>
public sealed record MaskedInputChunk(int Sender, int Offset, ReadOnlyMemory<uint> Values);

/// <summary>Stage 3 result, server to one surviving client: which of its neighbours survived and which dropped.</summary>
public sealed record UnmaskRequestMessage(int Receiver, IReadOnlyList<int> Survivors, IReadOnlyList<int> Dropped);

/// <summary>A revealed share with its commitment salt.</summary>
public sealed record RevealedShare(int Owner, byte[] Share, byte[] Salt);

/// <summary>Stage 4, client to server: self-mask-seed shares of survivors, mask-key shares of dropped neighbours.</summary>
public sealed record UnmaskResponseMessage(int Sender, IReadOnlyList<RevealedShare> SelfMaskSeedShares, IReadOnlyList<RevealedShare> MaskKeyShares)
{
    /// <summary>Payload bytes on the wire.</summary>
    public long WireBytes => 4 + (SelfMaskSeedShares?.Sum(Size) ?? 0) + (MaskKeyShares?.Sum(Size) ?? 0);

    private static long Size(RevealedShare s) => 4L + (s.Share?.Length ?? 0) + (s.Salt?.Length ?? 0);
}

/// <summary>Protocol stage of a session.</summary>
public enum SecAggStage
{
    /// <summary>Stage 1: public keys are advertised.</summary>
    AdvertiseKeys,

    /// <summary>Stage 2: encrypted shares are exchanged.</summary>
    ShareKeys,

    /// <summary>Stage 3: masked inputs are sent.</summary>
    MaskedInput,

    /// <summary>Stage 4: shares are revealed and masks removed.</summary>
    Unmask,

    /// <summary>The round finished; the server released the sum.</summary>
    Completed,

    /// <summary>The round failed; nothing was released.</summary>
    Failed,
}
