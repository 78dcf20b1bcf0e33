using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.SecureAggregation;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Google.Protobuf;
using Grpc.Core;
using ProtoChunk = Federated.Protos.V1.MaskedInputChunk;
using ProtoEncryptedShare = Federated.Protos.V1.EncryptedShare;
using SecAggParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;

namespace Federated.EdgeClient.Rounds;

/// <summary>How a participant's round ended on its side.</summary>
internal sealed record ParticipationOutcome(RoundManifest Manifest, ulong UploadedBytes, IReadOnlyList<int> Survivors, IReadOnlyList<int> Dropped);

/// <summary>
/// Takes part in one SecAgg+ round over the wire: verifies the signed manifest, then drives a
/// <see cref="ClientSession"/> through the four stages, streaming the masked input in chunks. Every call has a
/// deadline: the stage's deadline from the manifest plus the connection's call timeout.
/// </summary>
internal sealed class SecAggParticipant(CoordinatorConnection connection, string identityName)
{
    /// <summary>
    /// Runs before this participant sends its message of each stage (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT,
    /// UNMASK). Fault injection for dropout tests: a hook that throws or never returns makes the participant vanish
    /// at that stage, exactly as a crashed client would.
    /// </summary>
    public Func<RoundStage, CancellationToken, Task>? BeforeStage { get; init; }

    /// <summary>Fetches and checks the manifest of an invitation: the coordinator's signature, the round and this identity.</summary>
    public async Task<RoundManifest> FetchManifestAsync(RoundRef invitation, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(invitation);
        GetRoundManifestResponse signed = await connection.Edge.GetRoundManifestAsync(new GetRoundManifestRequest { Round = invitation }, connection.Call(cancellationToken));
        using ECDsa? key = connection.ServerCertificate?.GetECDsaPublicKey();
        if (key is null || !key.VerifyData(signed.Manifest.Span, signed.Signature.Span, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
        {
            throw new InvalidDataException("the round manifest's signature does not verify with the coordinator's TLS certificate");
        }
        RoundManifest manifest = RoundManifest.Parser.ParseFrom(signed.Manifest);
        if (!invitation.Equals(manifest.Round))
        {
            throw new InvalidDataException($"the manifest is for round {manifest.Round?.Round} of run '{manifest.Round?.RunId}', not the invitation's");
        }
        if (manifest.Self?.ClientId != identityName || !manifest.Participants.Contains(manifest.Self))
        {
            throw new InvalidDataException($"the manifest is addressed to '{manifest.Self?.ClientId}', not to this identity '{identityName}'");
        }
        if (manifest.Secagg is null || manifest.Secagg.MaxChunkBytes < 4 || manifest.Secagg.VectorLength is 0 or > 1 << 30)
        {
            throw new InvalidDataException("the manifest's SecAgg parameters are missing or out of range");
        }
        return manifest;
    }

    /// <summary>
    /// Runs the stages for <paramref name="manifest"/>. <paramref name="produceInput"/> returns the vector to aggregate
    /// (values in Z_(2^b), length d); it runs after the key exchange, and a participant that fails there has dropped.
    /// </summary>
    public async Task<ParticipationOutcome> ParticipateAsync(RoundManifest manifest, Func<RoundManifest, CancellationToken, Task<uint[]>> produceInput, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(produceInput);
        Protos.V1.SecAggParameters wire = manifest.Secagg;
        int self = checked((int)manifest.Self.Index);
        SecAggParameters parameters = SecAggParameters.Create(
            manifest.Round.RunId, manifest.Round.Round, manifest.Participants.Select(p => checked((int)p.Index)),
            checked((int)wire.VectorLength), checked((int)wire.RingBits), checked((int)wire.Neighbours), checked((int)wire.Threshold), wire.GraphSeed.Span);
        using var session = new ClientSession(parameters, self);

        AdvertiseKeysMessage advertised = session.AdvertiseKeys();
        await StageAsync(RoundStage.AdvertiseKeys, cancellationToken);
        AdvertiseKeysResponse roster = await connection.Edge.AdvertiseKeysAsync(
            new AdvertiseKeysRequest
            {
                Round = manifest.Round,
                EncryptionPublicKey = ByteString.CopyFrom(advertised.CipherPublicKey),
                MaskPublicKey = ByteString.CopyFrom(advertised.MaskPublicKey),
            },
            StageCall(manifest.AdvertiseKeysDeadline, cancellationToken));

        ShareKeysMessage dealt = session.ReceiveRoster(new KeyRosterMessage(self,
            [.. roster.Neighbours.Select(n => new AdvertisedKeys(checked((int)n.Participant.Index), n.EncryptionPublicKey.ToByteArray(), n.MaskPublicKey.ToByteArray()))]));
        var shareRequest = new ShareKeysRequest { Round = manifest.Round };
        shareRequest.Shares.AddRange(dealt.Shares.Select(s => new ProtoEncryptedShare { FromIndex = (uint)self, ToIndex = (uint)s.Receiver, Ciphertext = ByteString.CopyFrom(s.Ciphertext) }));
        shareRequest.Commitments.AddRange(dealt.Commitments.Select(c => new Protos.V1.ShareCommitment
        {
            HolderIndex = (uint)c.Holder,
            SelfMaskSeedCommitment = ByteString.CopyFrom(c.SelfMaskSeedCommitment),
            MaskKeyCommitment = ByteString.CopyFrom(c.MaskKeyCommitment),
        }));
        await StageAsync(RoundStage.ShareKeys, cancellationToken);
        ShareKeysResponse inbound = await connection.Edge.ShareKeysAsync(shareRequest, StageCall(manifest.ShareKeysDeadline, cancellationToken));
        session.ReceiveForwardedShares(new ForwardedSharesMessage(self, [.. inbound.Shares.Select(s => new ForwardedShare(checked((int)s.FromIndex), s.Ciphertext.ToByteArray()))]));

        uint[] input = await produceInput(manifest, cancellationToken);
        MaskedInputMessage masked = session.MaskInput(input);
        await StageAsync(RoundStage.MaskedInput, cancellationToken);
        (ulong uploaded, UploadMaskedInputResponse survivors) = await UploadAsync(manifest, masked.MaskedInput, cancellationToken);

        UnmaskResponseMessage reveal = session.ReceiveUnmaskRequest(new UnmaskRequestMessage(self,
            [.. survivors.Survivors.Select(i => checked((int)i))], [.. survivors.Dropped.Select(i => checked((int)i))]));
        var unmask = new UnmaskRequest { Round = manifest.Round };
        unmask.SelfMaskShares.AddRange(reveal.SelfMaskSeedShares.Select(ToWire));
        unmask.MaskKeyShares.AddRange(reveal.MaskKeyShares.Select(ToWire));
        await StageAsync(RoundStage.Unmask, cancellationToken);
        await connection.Edge.UnmaskAsync(unmask, StageCall(manifest.UnmaskDeadline, cancellationToken));
        return new ParticipationOutcome(manifest, uploaded, [.. survivors.Survivors.Select(i => (int)i)], [.. survivors.Dropped.Select(i => (int)i)]);
    }

    /// <summary>Declines a round, for example because its manifest breaks the local policy.</summary>
    public async Task DeclineAsync(RoundRef round, DeclineReason reason, string rule, string detail, CancellationToken cancellationToken) =>
        await connection.Edge.DeclineRoundAsync(new DeclineRoundRequest { Round = round, Reason = reason, Rule = rule, Detail = detail }, connection.Call(cancellationToken));

    private async Task<(ulong Bytes, UploadMaskedInputResponse Response)> UploadAsync(RoundManifest manifest, uint[] masked, CancellationToken cancellationToken)
    {
        int elementsPerChunk = (int)Math.Max(1, manifest.Secagg.MaxChunkBytes / 4);
        using AsyncClientStreamingCall<ProtoChunk, UploadMaskedInputResponse> call =
            connection.Edge.UploadMaskedInput(StageCall(manifest.MaskedInputDeadline, cancellationToken));
        ulong total = 4UL * (ulong)masked.Length;
        byte[] buffer = new byte[4 * Math.Min(elementsPerChunk, masked.Length)];
        for (int offset = 0; offset < masked.Length; offset += elementsPerChunk)
        {
            int count = Math.Min(elementsPerChunk, masked.Length - offset);
            for (int i = 0; i < count; i++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(4 * i, 4), masked[offset + i]);
            }
            var chunk = new ProtoChunk { Offset = 4UL * (ulong)offset, Data = ByteString.CopyFrom(buffer, 0, 4 * count) };
            if (offset == 0)
            {
                chunk.Round = manifest.Round;
                chunk.TotalBytes = total;
            }
            await call.RequestStream.WriteAsync(chunk, cancellationToken);
        }
        await call.RequestStream.CompleteAsync();
        UploadMaskedInputResponse response = await call.ResponseAsync;
        return (response.ReceivedBytes, response);
    }

    private Task StageAsync(RoundStage stage, CancellationToken cancellationToken) =>
        BeforeStage is { } hook ? hook(stage, cancellationToken) : Task.CompletedTask;

    private CallOptions StageCall(Google.Protobuf.WellKnownTypes.Timestamp? stageDeadline, CancellationToken cancellationToken)
    {
        // A long poll returns when the stage closes, at the latest at its deadline; the call timeout covers transfer.
        CallOptions defaults = connection.Call(cancellationToken);
        if (stageDeadline is null)
        {
            return defaults;
        }
        TimeSpan slack = defaults.Deadline!.Value - DateTime.UtcNow;
        return defaults.WithDeadline(stageDeadline.ToDateTime() + slack);
    }

    private static ReconstructionShare ToWire(RevealedShare share) => new()
    {
        OwnerIndex = (uint)share.Owner,
        Share = ByteString.CopyFrom(share.Share),
        Salt = ByteString.CopyFrom(share.Salt),
    };
}
