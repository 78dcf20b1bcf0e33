using System.Collections.Concurrent;
using System.Security.Cryptography;
using Federated.Protos.V1;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace Federated.Coordinator.Rounds;

/// <summary>The rounds in progress and the invitations that heartbeats deliver to selected clients.</summary>
internal sealed class RoundRegistry(CoordinatorSigner signer, TimeProvider time) : IDisposable
{
    private readonly ConcurrentDictionary<(string RunId, uint Round), SecAggRound> _rounds = new();
    private readonly ConcurrentDictionary<string, RoundRef> _invitations = new(StringComparer.Ordinal);

    /// <summary>Opens a round: fresh graph seed from the CSPRNG, every participant invited.</summary>
    public SecAggRound Start(SecAggRoundPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var round = new SecAggRound(plan, RandomNumberGenerator.GetBytes(32), time);
        if (!_rounds.TryAdd((plan.RunId, (uint)plan.Round), round))
        {
            round.Dispose();
            throw new InvalidOperationException($"round {plan.Round} of run {plan.RunId} already exists");
        }
        foreach (string participant in plan.Participants)
        {
            _invitations[participant] = round.Ref;
        }
        return round;
    }

    /// <summary>Forgets a finished round and its outstanding invitations.</summary>
    public void Finish(SecAggRound round)
    {
        ArgumentNullException.ThrowIfNull(round);
        if (_rounds.TryRemove((round.Plan.RunId, (uint)round.Plan.Round), out _))
        {
            foreach (string participant in round.Plan.Participants)
            {
                _invitations.TryRemove(new KeyValuePair<string, RoundRef>(participant, round.Ref));
            }
            round.Dispose();
        }
    }

    public RoundRef? InvitationFor(string clientId) => _invitations.TryGetValue(clientId, out RoundRef? invitation) ? invitation : null;

    /// <summary>The round a message names; FAILED_PRECONDITION for an unknown, finished or replayed round.</summary>
    public SecAggRound Find(RoundRef? reference)
    {
        if (reference is null || string.IsNullOrEmpty(reference.RunId) || reference.Round == 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "round (run_id and round >= 1) is required"));
        }
        return _rounds.TryGetValue((reference.RunId, reference.Round), out SecAggRound? round)
            ? round
            : throw new RpcException(new Status(StatusCode.FailedPrecondition, $"round {reference.Round} of run '{reference.RunId}' is not in progress"));
    }

    /// <summary>The signed manifest for one participant; its invitation is consumed.</summary>
    public GetRoundManifestResponse Manifest(SecAggRound round, string clientId)
    {
        int index = round.IndexOf(clientId);
        var manifest = new RoundManifest
        {
            Round = round.Ref,
            Self = new ParticipantRef { Index = (uint)index, ClientId = clientId },
            Secagg = new SecAggParameters
            {
                Participants = (uint)round.Parameters.ClientCount,
                Threshold = (uint)round.Parameters.Threshold,
                Neighbours = (uint)round.Parameters.Degree,
                RingBits = (uint)round.Parameters.Bits,
                VectorLength = (ulong)round.Parameters.VectorLength,
                MaxChunkBytes = (uint)round.Plan.MaxChunkBytes,
                GraphSeed = ByteString.CopyFrom(round.Parameters.GraphSeed.Span),
            },
            AdvertiseKeysDeadline = Timestamp.FromDateTimeOffset(round.Deadlines[0]),
            ShareKeysDeadline = Timestamp.FromDateTimeOffset(round.Deadlines[1]),
            MaskedInputDeadline = Timestamp.FromDateTimeOffset(round.Deadlines[2]),
            UnmaskDeadline = Timestamp.FromDateTimeOffset(round.Deadlines[3]),
            Dp = round.Plan.Dp,
            GlobalAdapter = round.Plan.GlobalAdapter,
            LocalSteps = (uint)round.Plan.LocalSteps,
            LearningRate = round.Plan.LearningRate,
            EpsilonAfterRound = round.Plan.EpsilonAfterRound,
        };
        foreach ((string name, int i) in round.Indices.OrderBy(p => p.Value))
        {
            manifest.Participants.Add(new ParticipantRef { Index = (uint)i, ClientId = name });
        }
        byte[] bytes = manifest.ToByteArray();
        _invitations.TryRemove(new KeyValuePair<string, RoundRef>(clientId, round.Ref));
        return new GetRoundManifestResponse { Manifest = ByteString.CopyFrom(bytes), Signature = ByteString.CopyFrom(signer.Sign(bytes)) };
    }

    public void Decline(SecAggRound round, string clientId)
    {
        round.Decline(round.IndexOf(clientId));
        _invitations.TryRemove(new KeyValuePair<string, RoundRef>(clientId, round.Ref));
    }

    public void Dispose()
    {
        foreach (SecAggRound round in _rounds.Values)
        {
            round.Dispose();
        }
        _rounds.Clear();
    }
}
