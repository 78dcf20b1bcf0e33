using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Security;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Wire;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using ProtoChunk = Federated.Protos.V1.MaskedInputChunk;
using SecAggChunk = Federated.Aggregation.SecureAggregation.MaskedInputChunk;

namespace Federated.Coordinator.Services;

/// <summary>The edge service: maps messages to the state store and the rounds in progress. Callers are role-checked clients.</summary>
internal sealed class EdgeGrpcService(CoordinatorState state, RoundRegistry rounds, AdapterStore adapters, CoordinatorOptions options, TimeProvider time, ILogger<EdgeGrpcService> logger, Telemetry.CoordinatorMetrics? metrics = null) : EdgeService.EdgeServiceBase
{
    /// <summary>Adapter download chunk size (the proto documents at most 1 MiB).</summary>
    public const int AdapterChunkBytes = 1 << 20;

    private const int MaxVersionLength = 64;
    private const double MaxReportedRecordEpsilon = 1_000_000;
    private const int MaxDeviceLength = 16;
    private const int MaxDeclineDetailLength = 256;
    private const int MaxDeclineRuleLength = 64;
    private const long MaxReplaySkip = 100_000;

    public override Task<RegisterResponse> Register(RegisterRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        string version = RequireText(request.ClientVersion, "client_version", MaxVersionLength);
        string device = RequireText(request.Device, "device", MaxDeviceLength);
        state.Clients.Register(caller.Name, caller.CertificateSha256, version, device);
        CoordinatorLog.ClientRegistered(logger, caller.Name, version, device, caller.CertificateSha256);
        return Task.FromResult(new RegisterResponse
        {
            ClientId = caller.Name,
            HeartbeatIntervalSeconds = (uint)options.HeartbeatIntervalSeconds,
            ServerTime = Timestamp.FromDateTimeOffset(time.GetUtcNow()),
        });
    }

    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        if (!state.Clients.Heartbeat(caller.Name, request.Available))
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"client '{caller.Name}' is not registered; call Register first"));
        }
        CoordinatorLog.Heartbeat(logger, caller.Name, request.Available);
        return Task.FromResult(new HeartbeatResponse
        {
            HeartbeatIntervalSeconds = (uint)options.HeartbeatIntervalSeconds,
            Invitation = request.Available ? rounds.InvitationFor(caller.Name) : null,
        });
    }

    public override Task<GetRoundManifestResponse> GetRoundManifest(GetRoundManifestRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        SecAggRound round = rounds.Find(request.Round);
        return Task.FromResult(rounds.Manifest(round, caller.Name));
    }

    public override Task<DeclineRoundResponse> DeclineRound(DeclineRoundRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        if (request.Reason == DeclineReason.Unspecified || !System.Enum.IsDefined(request.Reason))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"decline reason {(int)request.Reason} is invalid: use one of the DeclineReason values other than UNSPECIFIED"));
        }
        string detail = RequireText(request.Detail, "detail", MaxDeclineDetailLength);
        if (request.Rule.Length > MaxDeclineRuleLength || !request.Rule.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '_'))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"rule must be 0..{MaxDeclineRuleLength} characters of a-z, 0-9 and _"));
        }
        SecAggRound round = rounds.Find(request.Round);
        long? lastCharged = null;
        if (request.Reason == DeclineReason.ReplayedRound)
        {
            // A client's claim moves the run's numbering forward, never back, and only within a bound (no overflow).
            if (request.LastChargedRound < (ulong)round.Plan.Round || request.LastChargedRound > (ulong)round.Plan.Round + MaxReplaySkip)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument,
                    $"last_charged_round {request.LastChargedRound} is invalid for a replayed round {round.Plan.Round}: use {round.Plan.Round}..{round.Plan.Round + MaxReplaySkip}"));
            }
            lastCharged = (long)request.LastChargedRound;
        }
        else if (request.LastChargedRound != 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "last_charged_round is only set with DECLINE_REASON_REPLAYED_ROUND"));
        }
        rounds.Decline(round, caller.Name, lastCharged, request.Rule);
        // Durable before the reply: the decline and the client's rule are on the audit chain.
        state.Rounds.RecordDecline(round.Plan.RunId, round.Plan.Round, caller.Name, request.Reason.ToString(), request.Rule, detail);
        CoordinatorLog.RoundDeclined(logger, caller.Name, round.Plan.RunId, round.Plan.Round, request.Reason.ToString(), detail);
        return Task.FromResult(new DeclineRoundResponse());
    }

    public override async Task DownloadAdapter(DownloadAdapterRequest request, IServerStreamWriter<AdapterChunk> responseStream, ServerCallContext context)
    {
        if (request.Sha256.Length != 64 || !request.Sha256.All(char.IsAsciiHexDigitLower))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "sha256 must be 64 lowercase hex characters"));
        }
        (Stream Content, long SizeBytes, byte[] Signature)? opened;
        try
        {
            opened = adapters.Open(request.Sha256);
        }
        catch (Storage.AtRestDecryptionException ex)
        {
            // The operator's problem (wrong key, damaged disk), not the client's: the detail stays in the coordinator's log.
            CoordinatorLog.AdapterUnreadable(logger, request.Sha256, ex.Message);
            throw new RpcException(new Status(StatusCode.Internal, $"adapter {request.Sha256} cannot be read on this coordinator"));
        }
        if (opened is not { } adapter)
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"adapter {request.Sha256} is not stored on this coordinator"));
        }
        await using Stream content = adapter.Content;
        if (request.Offset > (ulong)adapter.SizeBytes)
        {
            throw new RpcException(new Status(StatusCode.OutOfRange, $"offset {request.Offset} is past the adapter's {adapter.SizeBytes} bytes"));
        }
        content.Seek((long)request.Offset, SeekOrigin.Begin);
        byte[] buffer = new byte[AdapterChunkBytes];
        long offset = (long)request.Offset;
        do
        {
            int read = await content.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, context.CancellationToken);
            bool last = offset + read >= adapter.SizeBytes;
            var chunk = new AdapterChunk { Offset = (ulong)offset, Data = Google.Protobuf.ByteString.CopyFrom(buffer, 0, read), TotalSize = (ulong)adapter.SizeBytes };
            if (last)
            {
                chunk.Sha256 = request.Sha256;
                chunk.CmsSignature = Google.Protobuf.ByteString.CopyFrom(adapter.Signature);
            }
            await responseStream.WriteAsync(chunk, context.CancellationToken);
            offset += read;
        }
        while (offset < adapter.SizeBytes);
    }

    public override async Task<AdvertiseKeysResponse> AdvertiseKeys(AdvertiseKeysRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        SecAggRound round = rounds.Find(request.Round);
        int index = round.IndexOf(caller.Name);
        // The caller's keys must carry its own signature: refused here, an unsigned or mis-signed advertisement would
        // make every honest peer leave the round when it checks the roster.
        X509Certificate2 certificate = context.GetHttpContext().Connection.ClientCertificate
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, "no client certificate on this connection"));
        if (!KeyAdvertisement.Verify(certificate, request.Round, (uint)index, caller.Name, request.EncryptionPublicKey.Span, request.MaskPublicKey.Span, request.KeySignature.Span))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument,
                "key_signature must be this identity's ECDSA signature (64 bytes, P1363) over its keys for this round and index (Federated.Wire.KeyAdvertisement)"));
        }
        KeyRosterMessage roster = await round.AdvertiseAsync(SecAggWire.FromRequest(index, request), new SignedKeys(certificate.RawData, request.KeySignature.ToByteArray()),
            context.CancellationToken);
        return SecAggWire.ToResponse(roster, round.Indices.ToDictionary(p => p.Value, p => p.Key), round.Signatures);
    }

    public override async Task<ShareKeysResponse> ShareKeys(ShareKeysRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        SecAggRound round = rounds.Find(request.Round);
        int index = round.IndexOf(caller.Name);
        ForwardedSharesMessage forwarded = await round.ShareKeysAsync(SecAggWire.FromRequest(index, request), context.CancellationToken);
        return SecAggWire.ToResponse(forwarded);
    }

    public override async Task<UploadMaskedInputResponse> UploadMaskedInput(IAsyncStreamReader<ProtoChunk> requestStream, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        CancellationToken cancellationToken = context.CancellationToken;
        if (!await requestStream.MoveNext(cancellationToken))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the upload has no chunks"));
        }
        ProtoChunk first = requestStream.Current;
        SecAggRound round = rounds.Find(first.Round);
        int index = round.IndexOf(caller.Name);
        ulong expectedTotal = 4UL * (ulong)round.Parameters.VectorLength;
        if (first.TotalBytes > expectedTotal)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, $"total_bytes {first.TotalBytes} exceeds the round's masked vector size {expectedTotal}"));
        }
        if (first.TotalBytes != expectedTotal)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"total_bytes {first.TotalBytes} must equal the round's masked vector size {expectedTotal}"));
        }
        // The holder's own record-level epsilon, for run status only (never for a ledger): refused when it is not a number
        // the proto allows, before anything is buffered.
        if (first.RecordEpsilon != 0 || first.RecordEpsilonDelta != 0)
        {
            if (!(first.RecordEpsilon > 0 && first.RecordEpsilon <= MaxReportedRecordEpsilon) || !(first.RecordEpsilonDelta > 0 && first.RecordEpsilonDelta < 1))
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument,
                    $"record_epsilon {first.RecordEpsilon} at record_epsilon_delta {first.RecordEpsilonDelta} is invalid: use (0, {MaxReportedRecordEpsilon}] at a delta in (0, 1), or 0 and 0"));
            }
        }
        // Refuse a duplicate, a dropped caller or the wrong stage before taking an upload slot and buffering anything.
        round.CheckUploadOpen(index);
        using IDisposable inFlight = round.BeginUpload(index);
        // The upload is buffered and added to the round's sum only once whole and valid: a part-way upload (a
        // client that dies, lies about its length or sends a bad later chunk) could not be taken out of a running
        // sum again and would sink the round for every other participant. The round bounds how many buffers exist.
        using IDisposable slot = await round.AcquireUploadSlotAsync(cancellationToken);
        var vector = new uint[round.Parameters.VectorLength];
        ulong offset = 0;
        do
        {
            ProtoChunk chunk = requestStream.Current;
            if (chunk.Round is not null && !chunk.Round.Equals(first.Round))
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, "a chunk names a different round than the first chunk"));
            }
            if (chunk.Offset != offset)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"chunk offset {chunk.Offset} is not the next expected offset {offset}"));
            }
            int length = chunk.Data.Length;
            if (length > round.Plan.MaxChunkBytes)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted, $"chunk of {length} bytes exceeds max_chunk_bytes {round.Plan.MaxChunkBytes}"));
            }
            if (length == 0 || length % 4 != 0)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"chunk of {length} bytes is not a positive whole number of 4-byte ring elements"));
            }
            if (offset + (ulong)length > expectedTotal)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted, $"upload exceeds the round's masked vector size {expectedTotal}"));
            }
            SecAggWire.ReadElements(chunk.Data.Span, vector.AsSpan((int)(offset / 4), length / 4));
            offset += (ulong)length;
        }
        while (await requestStream.MoveNext(cancellationToken));
        if (offset != expectedTotal)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the upload ended after {offset} of {expectedTotal} bytes; nothing of it was added"));
        }
        round.ReceiveChunk(new SecAggChunk(index, 0, vector));
        metrics?.Uploaded(round.Plan.RunId, (long)offset);
        if (first.RecordEpsilon > 0)
        {
            rounds.ReportRecordEpsilon(round.Ref, caller.Name, first.RecordEpsilon, first.RecordEpsilonDelta);
        }

        UnmaskRequestMessage request = await round.FinishUploadAsync(index, cancellationToken);
        UploadMaskedInputResponse response = SecAggWire.ToResponse(offset, request);
        // The whole survivor set, for the consistency check each survivor signs before it reveals anything.
        response.AllSurvivors.AddRange(round.Survivors.Select(i => (uint)i));
        return response;
    }

    public override async Task<ConfirmSurvivorsResponse> ConfirmSurvivors(ConfirmSurvivorsRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        SecAggRound round = rounds.Find(request.Round);
        int index = round.IndexOf(caller.Name);
        if (request.Signature.Length != 64)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "signature must be 64 bytes (ECDSA P-256, IEEE P1363) over the survivor set"));
        }
        IReadOnlyDictionary<int, byte[]> signatures = await round.ConfirmSurvivorsAsync(index, request.Signature.ToByteArray(), context.CancellationToken);
        var response = new ConfirmSurvivorsResponse();
        response.Signatures.AddRange(signatures.OrderBy(p => p.Key).Select(p => new SurvivorSignature { Index = (uint)p.Key, Signature = Google.Protobuf.ByteString.CopyFrom(p.Value) }));
        return response;
    }

    public override Task<UnmaskResponse> Unmask(UnmaskRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        SecAggRound round = rounds.Find(request.Round);
        int index = round.IndexOf(caller.Name);
        round.Unmask(SecAggWire.FromRequest(index, request));
        return Task.FromResult(new UnmaskResponse { Stage = round.Stage });
    }

    private static string RequireText(string value, string field, int maxLength)
    {
        if (value.Length > maxLength)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} is {value.Length} characters; at most {maxLength} are allowed"));
        }
        if (value.Any(char.IsControl))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} contains control characters"));
        }
        return value;
    }
}
