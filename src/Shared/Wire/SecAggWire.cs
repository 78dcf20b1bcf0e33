using System.Buffers.Binary;
using Federated.Aggregation.SecureAggregation;
using Federated.Protos.V1;
using Google.Protobuf;
using Grpc.Core;
using DomainParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;
using ProtoEncryptedShare = Federated.Protos.V1.EncryptedShare;
using ProtoShareCommitment = Federated.Protos.V1.ShareCommitment;
using SecAggEncryptedShare = Federated.Aggregation.SecureAggregation.EncryptedShare;
using SecAggShareCommitment = Federated.Aggregation.SecureAggregation.ShareCommitment;
using WireChunk = Federated.Protos.V1.MaskedInputChunk;

namespace Federated.Wire;

/// <summary>
/// The one mapping between the SecAgg+ stage messages of the aggregation library and the federated.v1 edge protos,
/// used by the coordinator's edge service, the edge client's participant and the tests that script a round.
/// Fields the coordinator reads from a client (FromRequest) are refused with INVALID_ARGUMENT; fields a client
/// reads from the coordinator (FromResponse, <see cref="Parameters"/>) with <see cref="InvalidDataException"/>,
/// so that a lying coordinator costs the client a round, never the process.
/// </summary>
public static class SecAggWire
{
    /// <summary>Bytes of one ring element on the wire (a little-endian uint32, whatever the ring's bit width).</summary>
    public const int ElementBytes = 4;

    /// <summary>The round's SecAgg+ parameters as the manifest states them.</summary>
    public static DomainParameters Parameters(RoundManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        Protos.V1.SecAggParameters wire = manifest.Secagg
            ?? throw new InvalidDataException("the manifest carries no SecAgg parameters");
        if (manifest.Round is null)
        {
            throw new InvalidDataException("the manifest names no round");
        }
        if (wire.VectorLength is 0 or > 1 << 30 || wire.RingBits > 64 || wire.Neighbours > int.MaxValue || wire.Threshold > int.MaxValue)
        {
            throw new InvalidDataException($"the manifest's SecAgg parameters are out of range (vector length {wire.VectorLength}, ring bits {wire.RingBits}, neighbours {wire.Neighbours}, threshold {wire.Threshold})");
        }
        int[] indices = [.. manifest.Participants.Select(p => ResponseIndex(p.Index, "participant index"))];
        try
        {
            return DomainParameters.Create(manifest.Round.RunId, manifest.Round.Round, indices,
                (int)wire.VectorLength, (int)wire.RingBits, (int)wire.Neighbours, (int)wire.Threshold, wire.GraphSeed.Span);
        }
        catch (ArgumentException ex)
        {
            throw new InvalidDataException($"the manifest's SecAgg parameters are unusable: {ex.Message}", ex);
        }
    }

    /// <summary>Stage 1, client side: the two advertised public keys.</summary>
    public static AdvertiseKeysRequest ToRequest(RoundRef round, AdvertiseKeysMessage keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        return new AdvertiseKeysRequest
        {
            Round = round,
            EncryptionPublicKey = ByteString.CopyFrom(keys.CipherPublicKey),
            MaskPublicKey = ByteString.CopyFrom(keys.MaskPublicKey),
        };
    }

    /// <summary>Stage 1, client side: the two public keys signed with the identity's key (<see cref="KeyAdvertisement"/>).</summary>
    public static AdvertiseKeysRequest ToSignedRequest(RoundRef round, uint index, AdvertiseKeysMessage keys, System.Security.Cryptography.X509Certificates.X509Certificate2 identity)
    {
        AdvertiseKeysRequest request = ToRequest(round, keys);
        request.KeySignature = ByteString.CopyFrom(KeyAdvertisement.Sign(identity, round, index, keys.CipherPublicKey, keys.MaskPublicKey));
        return request;
    }

    /// <summary>Stage 1, coordinator side: the caller's keys (the key checks are the session's).</summary>
    public static AdvertiseKeysMessage FromRequest(int sender, AdvertiseKeysRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return new AdvertiseKeysMessage(sender, request.EncryptionPublicKey.ToByteArray(), request.MaskPublicKey.ToByteArray());
    }

    /// <summary>Stage 1 answer, coordinator side: each neighbour's keys under its index and name.</summary>
    public static AdvertiseKeysResponse ToResponse(KeyRosterMessage roster, IReadOnlyDictionary<int, string> names, IReadOnlyDictionary<int, SignedKeys> signatures)
    {
        ArgumentNullException.ThrowIfNull(roster);
        ArgumentNullException.ThrowIfNull(names);
        ArgumentNullException.ThrowIfNull(signatures);
        var response = new AdvertiseKeysResponse();
        foreach (AdvertisedKeys keys in roster.Neighbours)
        {
            SignedKeys signed = signatures[keys.ClientId];
            response.Neighbours.Add(new ParticipantKeys
            {
                Participant = new ParticipantRef { Index = (uint)keys.ClientId, ClientId = names[keys.ClientId] },
                EncryptionPublicKey = ByteString.CopyFrom(keys.CipherPublicKey),
                MaskPublicKey = ByteString.CopyFrom(keys.MaskPublicKey),
                KeySignature = ByteString.CopyFrom(signed.Signature),
                Certificate = ByteString.CopyFrom(signed.Certificate),
            });
        }
        return response;
    }

    /// <summary>Stage 1 answer, client side: the roster of neighbour keys.</summary>
    public static KeyRosterMessage FromResponse(int receiver, AdvertiseKeysResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return new KeyRosterMessage(receiver, [.. response.Neighbours.Select(n => new AdvertisedKeys(
            ResponseIndex(n.Participant?.Index ?? 0, "neighbour index"), n.EncryptionPublicKey.ToByteArray(), n.MaskPublicKey.ToByteArray()))]);
    }

    /// <summary>Stage 2, client side: encrypted shares from this sender and its commitments.</summary>
    public static ShareKeysRequest ToRequest(RoundRef round, ShareKeysMessage dealt)
    {
        ArgumentNullException.ThrowIfNull(dealt);
        var request = new ShareKeysRequest { Round = round };
        request.Shares.AddRange(dealt.Shares.Select(s => new ProtoEncryptedShare { FromIndex = (uint)dealt.Sender, ToIndex = (uint)s.Receiver, Ciphertext = ByteString.CopyFrom(s.Ciphertext) }));
        request.Commitments.AddRange(dealt.Commitments.Select(c => new ProtoShareCommitment
        {
            HolderIndex = (uint)c.Holder,
            SelfMaskSeedCommitment = ByteString.CopyFrom(c.SelfMaskSeedCommitment),
            MaskKeyCommitment = ByteString.CopyFrom(c.MaskKeyCommitment),
        }));
        return request;
    }

    /// <summary>Stage 2, coordinator side: every share must come from the caller's own index.</summary>
    public static ShareKeysMessage FromRequest(int sender, ShareKeysRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var shares = new List<SecAggEncryptedShare>(request.Shares.Count);
        foreach (ProtoEncryptedShare share in request.Shares)
        {
            if (share.FromIndex != (uint)sender)
            {
                throw Invalid($"share from_index {share.FromIndex} is not the caller's index {sender}");
            }
            shares.Add(new SecAggEncryptedShare(RequestIndex(share.ToIndex, "to_index"), share.Ciphertext.ToByteArray()));
        }
        var commitments = request.Commitments
            .Select(c => new SecAggShareCommitment(RequestIndex(c.HolderIndex, "holder_index"), c.SelfMaskSeedCommitment.ToByteArray(), c.MaskKeyCommitment.ToByteArray()))
            .ToList();
        return new ShareKeysMessage(sender, shares, commitments);
    }

    /// <summary>Stage 2 answer, coordinator side: the ciphertexts addressed to the receiver.</summary>
    public static ShareKeysResponse ToResponse(ForwardedSharesMessage forwarded)
    {
        ArgumentNullException.ThrowIfNull(forwarded);
        var response = new ShareKeysResponse();
        response.Shares.AddRange(forwarded.Shares.Select(s => new ProtoEncryptedShare { FromIndex = (uint)s.Sender, ToIndex = (uint)forwarded.Receiver, Ciphertext = ByteString.CopyFrom(s.Ciphertext) }));
        return response;
    }

    /// <summary>Stage 2 answer, client side.</summary>
    public static ForwardedSharesMessage FromResponse(int receiver, ShareKeysResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return new ForwardedSharesMessage(receiver, [.. response.Shares.Select(s => new ForwardedShare(ResponseIndex(s.FromIndex, "from_index"), s.Ciphertext.ToByteArray()))]);
    }

    /// <summary>
    /// Stage 3, client side: the masked input as upload chunks of at most <paramref name="maxChunkBytes"/> (the round and
    /// the total on the first). The chunks wrap slices of <paramref name="masked"/> without copying it, so the buffer
    /// must stay unchanged until the last chunk is written.
    /// </summary>
    public static IEnumerable<WireChunk> UploadChunks(RoundRef round, ReadOnlyMemory<byte> masked, uint maxChunkBytes)
    {
        ArgumentNullException.ThrowIfNull(round);
        if (masked.Length == 0 || masked.Length % ElementBytes != 0)
        {
            throw new ArgumentException($"the masked input is {masked.Length} bytes; it must be a positive whole number of {ElementBytes}-byte ring elements", nameof(masked));
        }
        int chunkBytes = (int)Math.Max(ElementBytes, Math.Min(maxChunkBytes, int.MaxValue) / ElementBytes * ElementBytes);
        return Chunks(round, masked, chunkBytes);
    }

    /// <summary>Stage 3, coordinator side: one chunk's little-endian ring elements into <paramref name="target"/> (same count).</summary>
    public static void ReadElements(ReadOnlySpan<byte> data, Span<uint> target)
    {
        if (data.Length != ElementBytes * target.Length)
        {
            throw new ArgumentException($"{data.Length} bytes do not hold {target.Length} ring elements", nameof(data));
        }
        for (int i = 0; i < target.Length; i++)
        {
            target[i] = BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(ElementBytes * i, ElementBytes));
        }
    }

    /// <summary>Stage 3 answer, coordinator side: which neighbours survived and which dropped.</summary>
    public static UploadMaskedInputResponse ToResponse(ulong receivedBytes, UnmaskRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var response = new UploadMaskedInputResponse { ReceivedBytes = receivedBytes };
        response.Survivors.AddRange(request.Survivors.Select(i => (uint)i));
        response.Dropped.AddRange(request.Dropped.Select(i => (uint)i));
        return response;
    }

    /// <summary>Stage 3 answer, client side: the unmask request it implies.</summary>
    public static UnmaskRequestMessage FromResponse(int receiver, UploadMaskedInputResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        return new UnmaskRequestMessage(receiver,
            [.. response.Survivors.Select(i => ResponseIndex(i, "survivor index"))], [.. response.Dropped.Select(i => ResponseIndex(i, "dropped index"))]);
    }

    /// <summary>Stage 4, client side: the revealed shares with their salts.</summary>
    public static UnmaskRequest ToRequest(RoundRef round, UnmaskResponseMessage reveal)
    {
        ArgumentNullException.ThrowIfNull(reveal);
        var request = new UnmaskRequest { Round = round };
        request.SelfMaskShares.AddRange(reveal.SelfMaskSeedShares.Select(ToWire));
        request.MaskKeyShares.AddRange(reveal.MaskKeyShares.Select(ToWire));
        return request;
    }

    /// <summary>Stage 4, coordinator side.</summary>
    public static UnmaskResponseMessage FromRequest(int sender, UnmaskRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return new UnmaskResponseMessage(sender, [.. request.SelfMaskShares.Select(FromWire)], [.. request.MaskKeyShares.Select(FromWire)]);
    }

    private static IEnumerable<WireChunk> Chunks(RoundRef round, ReadOnlyMemory<byte> masked, int chunkBytes)
    {
        for (int offset = 0; offset < masked.Length; offset += chunkBytes)
        {
            ReadOnlyMemory<byte> slice = masked.Slice(offset, Math.Min(chunkBytes, masked.Length - offset));
            var chunk = new WireChunk { Offset = (ulong)offset, Data = UnsafeByteOperations.UnsafeWrap(slice) };
            if (offset == 0)
            {
                chunk.Round = round;
                chunk.TotalBytes = (ulong)masked.Length;
            }
            yield return chunk;
        }
    }

    private static ReconstructionShare ToWire(RevealedShare share) => new()
    {
        OwnerIndex = (uint)share.Owner,
        Share = ByteString.CopyFrom(share.Share),
        Salt = ByteString.CopyFrom(share.Salt),
    };

    private static RevealedShare FromWire(ReconstructionShare share) =>
        new(RequestIndex(share.OwnerIndex, "owner_index"), share.Share.ToByteArray(), share.Salt.ToByteArray());

    // Participant indices are Shamir x-coordinates: 1 and up.
    private static int RequestIndex(uint value, string field) =>
        value is >= 1 and <= int.MaxValue ? (int)value : throw Invalid($"{field} {value} is invalid: participant indices start at 1");

    private static int ResponseIndex(uint value, string field) =>
        value is >= 1 and <= int.MaxValue ? (int)value : throw new InvalidDataException($"the coordinator sent {field} {value}: participant indices start at 1");

    private static RpcException Invalid(string message) => new(new Status(StatusCode.InvalidArgument, message));
}
