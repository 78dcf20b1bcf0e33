using Federated.Protos.V1;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// What a round asks of its participants besides SecAgg+ (all of it in the signed manifest): the DP parameters, the
/// global adapter to start from, the local training, and the epsilon the run reaches if the round is released.
/// </summary>
internal sealed record RoundInstructions(
    DpParameters? Dp = null,
    AdapterRef? GlobalAdapter = null,
    int LocalSteps = 0,
    double LearningRate = 0,
    double EpsilonAfterRound = 0);

/// <summary>Builds each participant's signed round manifest from the SecAgg+ round and the round's instructions.</summary>
internal static class RoundManifests
{
    /// <summary>
    /// The manifest for <paramref name="clientId"/> (a participant: its index is looked up), signed by the coordinator,
    /// carrying <paramref name="crlDer"/>, the federation's current CA-signed CRL (empty when there is none).
    /// </summary>
    /// <exception cref="NotAParticipantException">The client is not one of the round's participants.</exception>
    public static GetRoundManifestResponse Signed(SecAggRound round, RoundInstructions instructions, string clientId, CoordinatorSigner signer, ReadOnlySpan<byte> crlDer = default)
    {
        ArgumentNullException.ThrowIfNull(round);
        ArgumentNullException.ThrowIfNull(instructions);
        ArgumentNullException.ThrowIfNull(signer);
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
            Dp = instructions.Dp,
            GlobalAdapter = instructions.GlobalAdapter,
            LocalSteps = (uint)instructions.LocalSteps,
            LearningRate = instructions.LearningRate,
            EpsilonAfterRound = instructions.EpsilonAfterRound,
            CrlDer = ByteString.CopyFrom(crlDer),
        };
        foreach ((string name, int i) in round.Indices.OrderBy(p => p.Value))
        {
            manifest.Participants.Add(new ParticipantRef { Index = (uint)i, ClientId = name });
        }
        byte[] bytes = manifest.ToByteArray();
        return new GetRoundManifestResponse { Manifest = ByteString.CopyFrom(bytes), Signature = ByteString.CopyFrom(signer.Sign(bytes)) };
    }
}
