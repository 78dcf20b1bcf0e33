using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.SecureAggregation;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Wire;
using Grpc.Core;
using ProtoChunk = Federated.Protos.V1.MaskedInputChunk;

namespace Federated.EdgeClient.Rounds;

/// <summary>How a participant's round ended on its side.</summary>
/// <param name="RejectedPeers">Peers whose share ciphertexts this client rejected (failed authentication or not field
/// elements): dropouts for this client, which revealed nothing of them.</param>
internal sealed record ParticipationOutcome(RoundManifest Manifest, ulong UploadedBytes, IReadOnlyList<int> Survivors, IReadOnlyList<int> Dropped,
    IReadOnlyList<int> RejectedPeers);

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
    /// The returned array becomes the upload buffer: it is masked in place, so hand over one nobody else reads.
    /// </summary>
    /// <param name="recordEpsilon">Read after <paramref name="produceInput"/>: this holder's own record-level epsilon for the
    /// run and its delta, sent with the upload for the coordinator's run status (never charged there); null sends none.</param>
    public async Task<ParticipationOutcome> ParticipateAsync(RoundManifest manifest, Func<RoundManifest, CancellationToken, Task<uint[]>> produceInput, CancellationToken cancellationToken,
        Func<(double Epsilon, double Delta)?>? recordEpsilon = null)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(produceInput);
        RoundRef round = manifest.Round;
        int self = checked((int)manifest.Self.Index);
        using var session = new ClientSession(SecAggWire.Parameters(manifest), self);

        AdvertiseKeysRequest advertise = SecAggWire.ToSignedRequest(round, manifest.Self.Index, session.AdvertiseKeys(), connection.ClientCertificate);
        await StageAsync(RoundStage.AdvertiseKeys, cancellationToken);
        AdvertiseKeysResponse roster = await connection.Edge.AdvertiseKeysAsync(advertise, StageCall(manifest.AdvertiseKeysDeadline, cancellationToken));
        // Before any share is dealt: every neighbour's keys must be signed by that participant's own certificate, so a
        // coordinator cannot slip its keys in and decrypt the shares (InvalidDataException: this client leaves the round).
        KeyAdvertisement.VerifyRoster(manifest, roster, connection.Trust);
        // The verified neighbours' certificates: whose signatures on the survivor set count in the consistency check.
        Dictionary<int, byte[]> neighbourCertificates = roster.Neighbours.ToDictionary(n => (int)n.Participant.Index, n => n.Certificate.ToByteArray());

        ShareKeysRequest share = SecAggWire.ToRequest(round, session.ReceiveRoster(SecAggWire.FromResponse(self, roster)));
        await StageAsync(RoundStage.ShareKeys, cancellationToken);
        ShareKeysResponse inbound = await connection.Edge.ShareKeysAsync(share, StageCall(manifest.ShareKeysDeadline, cancellationToken));
        session.ReceiveForwardedShares(SecAggWire.FromResponse(self, inbound));

        // One ring buffer from the encoded input to the wire: masked where it lies, then sent as slices of itself.
        uint[] ring = await produceInput(manifest, cancellationToken);
        session.MaskInPlace(ring);
        await StageAsync(RoundStage.MaskedInput, cancellationToken);
        UploadMaskedInputResponse uploaded = await UploadAsync(manifest, ring, recordEpsilon?.Invoke(), cancellationToken);
        // Locals of an async method live as long as it does; the coordinator has the vector now.
        ring = [];

        UnmaskRequestMessage survivors = SecAggWire.FromResponse(self, uploaded);
        await StageAsync(RoundStage.Unmask, cancellationToken);
        // The consistency check (Bonawitz et al. 2017, section 4), before any share is revealed: sign the survivor set
        // and see t of this participant's neighbourhood sign the same one, so no neighbour can be "survived" here and
        // "dropped" elsewhere.
        int[] survivorSet = [.. uploaded.AllSurvivors.Select(i => i is 0 or > int.MaxValue ? throw new InvalidDataException($"survivor index {i} is out of range") : (int)i)];
        ConfirmSurvivorsResponse confirmed = await connection.Edge.ConfirmSurvivorsAsync(new ConfirmSurvivorsRequest
        {
            Round = round,
            Signature = Google.Protobuf.ByteString.CopyFrom(KeyAdvertisement.SignSurvivors(connection.ClientCertificate, round, survivorSet)),
        }, StageCall(manifest.UnmaskDeadline, cancellationToken));
        KeyAdvertisement.VerifySurvivorSet(round, self, survivorSet, survivors.Survivors, survivors.Dropped,
            confirmed.Signatures.Select(c => ((int)Math.Min(c.Index, int.MaxValue), c.Signature.ToByteArray())), neighbourCertificates, (int)manifest.Secagg.Threshold);
        UnmaskRequest unmask = SecAggWire.ToRequest(round, session.ReceiveUnmaskRequest(survivors));
        await connection.Edge.UnmaskAsync(unmask, StageCall(manifest.UnmaskDeadline, cancellationToken));
        return new ParticipationOutcome(manifest, uploaded.ReceivedBytes, survivors.Survivors, survivors.Dropped, session.State.RejectedPeers);
    }

    /// <summary>Declines a round, for example because its manifest breaks the local policy.</summary>
    public async Task DeclineAsync(RoundRef round, DeclineReason reason, string rule, string detail, CancellationToken cancellationToken, ulong lastChargedRound = 0) =>
        await connection.Edge.DeclineRoundAsync(
            new DeclineRoundRequest { Round = round, Reason = reason, Rule = rule, Detail = detail, LastChargedRound = lastChargedRound }, connection.Call(cancellationToken));

    /// <summary>
    /// Writes a masked vector as upload chunks that are slices of it (no copy of its d elements), each as large as
    /// <paramref name="maxChunkBytes"/> allows, then completes the stream.
    /// </summary>
    internal static async Task WriteMaskedAsync(IClientStreamWriter<ProtoChunk> writer, RoundRef round, uint[] masked, uint maxChunkBytes, CancellationToken cancellationToken,
        (double Epsilon, double Delta)? recordEpsilon = null)
    {
        ArgumentNullException.ThrowIfNull(writer);
        bool first = true;
        foreach (ProtoChunk chunk in SecAggWire.UploadChunks(round, new RingElementBytes(masked).Memory, maxChunkBytes))
        {
            if (first && recordEpsilon is { } reported)
            {
                chunk.RecordEpsilon = reported.Epsilon;
                chunk.RecordEpsilonDelta = reported.Delta;
            }
            first = false;
            await writer.WriteAsync(chunk, cancellationToken);
        }
        await writer.CompleteAsync();
    }

    private async Task<UploadMaskedInputResponse> UploadAsync(RoundManifest manifest, uint[] masked, (double Epsilon, double Delta)? recordEpsilon,
        CancellationToken cancellationToken)
    {
        using AsyncClientStreamingCall<ProtoChunk, UploadMaskedInputResponse> call =
            connection.Edge.UploadMaskedInput(StageCall(manifest.MaskedInputDeadline, cancellationToken));
        await WriteMaskedAsync(call.RequestStream, manifest.Round, masked, manifest.Secagg.MaxChunkBytes, cancellationToken, recordEpsilon);
        return await call.ResponseAsync;
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
}
