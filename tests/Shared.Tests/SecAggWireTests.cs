using System.Buffers.Binary;
using Federated.Aggregation.SecureAggregation;
using Federated.Protos.V1;
using Federated.Wire;
using Google.Protobuf;
using Grpc.Core;
using DomainParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;
using ProtoEncryptedShare = Federated.Protos.V1.EncryptedShare;
using WireChunk = Federated.Protos.V1.MaskedInputChunk;
using SecAggEncryptedShare = Federated.Aggregation.SecureAggregation.EncryptedShare;
using SecAggShareCommitment = Federated.Aggregation.SecureAggregation.ShareCommitment;

namespace Federated.Shared.Tests;

public sealed class SecAggWireTests
{
    private static readonly RoundRef s_round = new() { RunId = "run-1", Round = 3 };

    [Fact]
    public void AdvertiseKeys_RequestAndResponse_RoundTripWithNames()
    {
        var keys = new AdvertiseKeysMessage(2, [1, 2, 3], [4, 5]);

        AdvertiseKeysMessage back = SecAggWire.FromRequest(2, SecAggWire.ToRequest(s_round, keys));
        AdvertiseKeysResponse response = SecAggWire.ToResponse(new KeyRosterMessage(2, [new AdvertisedKeys(1, [7], [8]), new AdvertisedKeys(3, [9], [10])]),
            new Dictionary<int, string> { [1] = "alice", [3] = "carol" },
            new Dictionary<int, SignedKeys> { [1] = new([0x30, 1], [11]), [3] = new([0x30, 3], [13]) });
        KeyRosterMessage roster = SecAggWire.FromResponse(2, response);

        Assert.Equal(2, back.Sender);
        Assert.Equal(keys.CipherPublicKey, back.CipherPublicKey);
        Assert.Equal(keys.MaskPublicKey, back.MaskPublicKey);
        Assert.Equal(["alice", "carol"], response.Neighbours.Select(n => n.Participant.ClientId));
        Assert.Equal([1, 3], roster.Neighbours.Select(n => n.ClientId));
        Assert.Equal([9], roster.Neighbours[1].CipherPublicKey);
        // Each neighbour's certificate and key signature travel with its keys, for the peers to check.
        Assert.Equal([13], response.Neighbours[1].KeySignature.ToByteArray());
        Assert.Equal([0x30, 3], response.Neighbours[1].Certificate.ToByteArray());
    }

    [Fact]
    public void ShareKeys_RequestAndResponse_RoundTrip()
    {
        var dealt = new ShareKeysMessage(1, [new SecAggEncryptedShare(2, [1, 1]), new SecAggEncryptedShare(3, [2, 2])], [new SecAggShareCommitment(2, [5], [6])]);

        ShareKeysMessage back = SecAggWire.FromRequest(1, SecAggWire.ToRequest(s_round, dealt));
        ForwardedSharesMessage forwarded = SecAggWire.FromResponse(2, SecAggWire.ToResponse(new ForwardedSharesMessage(2, [new ForwardedShare(1, [1, 1])])));

        Assert.Equal([2, 3], back.Shares.Select(s => s.Receiver));
        Assert.Equal([2, 2], back.Shares[1].Ciphertext);
        SecAggShareCommitment commitment = Assert.Single(back.Commitments);
        Assert.Equal(2, commitment.Holder);
        Assert.Equal([5], commitment.SelfMaskSeedCommitment);
        Assert.Equal([6], commitment.MaskKeyCommitment);
        Assert.Equal((2, 1), (forwarded.Receiver, Assert.Single(forwarded.Shares).Sender));
    }

    [Fact]
    public void FromRequest_ShareFromAnotherIndex_InvalidArgumentNamingBoth()
    {
        var request = new ShareKeysRequest { Round = s_round };
        request.Shares.Add(new ProtoEncryptedShare { FromIndex = 3, ToIndex = 2, Ciphertext = ByteString.CopyFrom(1) });

        var ex = Assert.Throws<RpcException>(() => SecAggWire.FromRequest(1, request));

        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("share from_index 3 is not the caller's index 1", ex.Status.Detail);
    }

    [Fact]
    public void FromRequest_ZeroIndex_InvalidArgumentNamingTheField()
    {
        var request = new UnmaskRequest { Round = s_round };
        request.MaskKeyShares.Add(new ReconstructionShare { OwnerIndex = 0, Share = ByteString.CopyFrom(1), Salt = ByteString.CopyFrom(2) });

        var ex = Assert.Throws<RpcException>(() => SecAggWire.FromRequest(1, request));

        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal("owner_index 0 is invalid: participant indices start at 1", ex.Status.Detail);
    }

    [Fact]
    public void FromResponse_CoordinatorSendsAnIndexBeyondInt_InvalidDataNotACrash()
    {
        var response = new UploadMaskedInputResponse { ReceivedBytes = 4 };
        response.Survivors.Add(uint.MaxValue);

        var ex = Assert.Throws<InvalidDataException>(() => SecAggWire.FromResponse(1, response));

        Assert.Contains("survivor index 4294967295", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unmask_RequestRoundTrip_KeepsSharesAndSalts()
    {
        var reveal = new UnmaskResponseMessage(2, [new RevealedShare(1, [1], [2])], [new RevealedShare(3, [3], [4])]);

        UnmaskResponseMessage back = SecAggWire.FromRequest(2, SecAggWire.ToRequest(s_round, reveal));
        UnmaskRequestMessage survivors = SecAggWire.FromResponse(2, SecAggWire.ToResponse(8, new UnmaskRequestMessage(2, [1, 2], [3])));

        RevealedShare seed = Assert.Single(back.SelfMaskSeedShares);
        Assert.Equal(1, seed.Owner);
        Assert.Equal([1], seed.Share);
        Assert.Equal([2], seed.Salt);
        Assert.Equal(3, back.MaskKeyShares[0].Owner);
        Assert.Equal([1, 2], survivors.Survivors);
        Assert.Equal([3], survivors.Dropped);
    }

    [Fact]
    public void UploadChunks_TenElementsInChunksOfFour_SplitsInOrderRoundAndTotalOnTheFirst()
    {
        uint[] masked = [.. Enumerable.Range(1, 10).Select(i => (uint)i * 0x01010101u)];

        WireChunk[] chunks = [.. SecAggWire.UploadChunks(s_round, new RingElementBytes(masked).Memory, maxChunkBytes: 17)];

        Assert.Equal([0UL, 16UL, 32UL], chunks.Select(c => c.Offset));
        Assert.Equal([16, 16, 8], chunks.Select(c => c.Data.Length));
        Assert.Equal((s_round, 40UL), (chunks[0].Round, chunks[0].TotalBytes));
        Assert.All(chunks.Skip(1), c => Assert.Null(c.Round));
        var read = new uint[10];
        foreach (WireChunk chunk in chunks)
        {
            SecAggWire.ReadElements(chunk.Data.Span, read.AsSpan((int)chunk.Offset / 4, chunk.Data.Length / 4));
        }
        Assert.Equal(masked, read);
        Assert.Equal(masked[4], BinaryPrimitives.ReadUInt32LittleEndian(chunks[1].Data.Span));
    }

    [Fact]
    public void UploadChunks_SlicesOfTheVector_NoCopyIsMade()
    {
        uint[] masked = [1, 2, 3, 4];
        WireChunk chunk = SecAggWire.UploadChunks(s_round, new RingElementBytes(masked).Memory, 1024).Single();

        masked[2] = 0xDEADBEEF;

        Assert.Equal(0xDEADBEEF, BinaryPrimitives.ReadUInt32LittleEndian(chunk.Data.Span[8..]));
    }

    [Fact]
    public void UploadChunks_PartialElement_Refused()
    {
        Assert.Throws<ArgumentException>(() => SecAggWire.UploadChunks(s_round, new byte[6], 1024));
    }

    [Fact]
    public void Parameters_Manifest_BuildsTheRoundsParameters()
    {
        RoundManifest manifest = Manifest(vectorLength: 16);

        DomainParameters parameters = SecAggWire.Parameters(manifest);

        Assert.Equal(("run-1", 3L, 16, 32, 2, 2), (parameters.RunId, parameters.Round, parameters.VectorLength, parameters.Bits, parameters.Degree, parameters.Threshold));
        Assert.Equal([1, 2, 3], parameters.ClientIds);
    }

    [Fact]
    public void Parameters_VectorLengthBeyondTheLimit_InvalidData()
    {
        Assert.Throws<InvalidDataException>(() => SecAggWire.Parameters(Manifest(vectorLength: (1UL << 30) + 1)));
        Assert.Throws<InvalidDataException>(() => SecAggWire.Parameters(new RoundManifest { Round = s_round }));
    }

    private static RoundManifest Manifest(ulong vectorLength)
    {
        var manifest = new RoundManifest
        {
            Round = s_round,
            Self = new ParticipantRef { Index = 1, ClientId = "alice" },
            Secagg = new Protos.V1.SecAggParameters
            {
                Participants = 3, Threshold = 2, Neighbours = 2, RingBits = 32, VectorLength = vectorLength, MaxChunkBytes = 64,
                GraphSeed = ByteString.CopyFrom(new byte[32]),
            },
        };
        manifest.Participants.Add([new ParticipantRef { Index = 1, ClientId = "alice" }, new ParticipantRef { Index = 2, ClientId = "bob" }, new ParticipantRef { Index = 3, ClientId = "carol" }]);
        return manifest;
    }
}
