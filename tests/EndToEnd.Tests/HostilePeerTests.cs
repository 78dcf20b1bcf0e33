using System.Security.Cryptography;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Wire;
using Google.Protobuf;
using Grpc.Core;
using ProtoChunk = Federated.Protos.V1.MaskedInputChunk;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Hostile peers in one round of the real coordinator: honest participants run the edge's own SecAgg+ participant
/// (the code `edge-client run` masks and uploads with) with known inputs, while two participants attack at once.
/// </summary>
public sealed class HostilePeerTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private const int Length = 64;

    [Fact]
    public async Task Round_GarbageSharesPoisonedCommitmentsSlotHoggingAndRepeatedDeclines_HonestSumExactAndEveryHonestParticipantGoesOn()
    {
        string[] honestNames = ["alice", "bob", "carol"];
        // t = 3 of 5 (a majority): dave sends alice a garbage share ciphertext and holds an upload stream open with a
        // trickle while trying a second; erin declines twice after advertising and poisons her commitments for bob.
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("hostile-run", 1, [.. honestNames, "dave", "erin"], Length, 32,
            Degree: 4, Threshold: 3, StageTimeout: TimeSpan.FromSeconds(120), MaxChunkBytes: 64));
        var honest = new List<(EdgeIdentity Identity, CoordinatorConnection Connection, uint[] Input, Task<ParticipationOutcome> Outcome)>();
        ScriptedParticipant? dave = null, erin = null;
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        try
        {
            foreach (string name in honestNames)
            {
                var identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
                var connection = new CoordinatorConnection(coordinator.Address, identity);
                await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
                var participant = new SecAggParticipant(connection, name);
                RoundManifest manifest = await participant.FetchManifestAsync(round.Ref, CancellationToken.None);
                uint[] input = RandomInput();
                honest.Add((identity, connection, input, participant.ParticipateAsync(manifest, (_, _) => Task.FromResult((uint[])input.Clone()), stop.Token)));
            }
            dave = await ScriptedParticipant.JoinAsync(coordinator, "dave", round.Ref);
            erin = await ScriptedParticipant.JoinAsync(coordinator, "erin", round.Ref);
            int alice = round.IndexOf("alice"), bob = round.IndexOf("bob");

            // Advertise; then erin's declines come too late (a decline after advertising would be a free dropout), twice.
            Task<AdvertiseKeysResponse> daveRoster = dave.AdvertiseAsync(), erinRoster = erin.AdvertiseAsync();
            await Task.WhenAll(daveRoster, erinRoster);
            StatusCode[] declines = [await Decline(erin), await Decline(erin)];

            // Share: dave's ciphertext for alice is random bytes; erin's commitments for bob match nothing she dealt.
            ShareKeysRequest daveShares = dave.ShareRequest(await daveRoster);
            EncryptedShare toAlice = daveShares.Shares.Single(s => s.ToIndex == (uint)alice);
            toAlice.Ciphertext = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(toAlice.Ciphertext.Length));
            ShareKeysRequest erinShares = erin.ShareRequest(await erinRoster);
            ShareCommitment forBob = erinShares.Commitments.Single(c => c.HolderIndex == (uint)bob);
            forBob.SelfMaskSeedCommitment = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(forBob.SelfMaskSeedCommitment.Length));
            forBob.MaskKeyCommitment = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(forBob.MaskKeyCommitment.Length));
            await Task.WhenAll(dave.ShareAsync(), erin.ShareAsync());

            // Upload: dave holds one stream open after its first chunk and tries a second; the honest uploads go through meanwhile.
            IReadOnlyList<ProtoChunk> daveChunks = dave.UploadChunks(new uint[Length]);
            erin.UploadChunks(new uint[Length]);
            using AsyncClientStreamingCall<ProtoChunk, UploadMaskedInputResponse> held = dave.Connection.Edge.UploadMaskedInput(dave.Connection.Call(stop.Token));
            await held.RequestStream.WriteAsync(daveChunks[0]);
            // The honest uploads are whole while dave's stream is still open (each holds its claim until the stage closes: 3 + 1).
            await WaitAsync(() => honestNames.All(round.HasSubmitted) && round.UploadsInFlight == 4, stop.Token);
            StatusCode second = await BadMessageTests.Status(() => ScriptedParticipant.Upload(dave.Connection, daveChunks));
            foreach (ProtoChunk chunk in daveChunks.Skip(1))
            {
                await held.RequestStream.WriteAsync(chunk);
            }
            await held.RequestStream.CompleteAsync();
            UploadMaskedInputResponse[] survivors = await Task.WhenAll(held.ResponseAsync, erin.UploadAsync());

            // Unmask: both sign the survivor set (so nobody waits for them) and reveal what their sessions hold.
            await Task.WhenAll(Confirm(dave, survivors[0]), Confirm(erin, survivors[1]));
            dave.UnmaskRequest(survivors[0]);
            erin.UnmaskRequest(survivors[1]);
            await Task.WhenAll(dave.UnmaskAsync(), erin.UnmaskAsync());
            ParticipationOutcome[] outcomes = await Task.WhenAll(honest.Select(h => h.Outcome));
            uint[] sum = await round.Sum.WaitAsync(stop.Token);

            // The hostile inputs are zeros: the release is exactly the honest participants' sum.
            uint[] expected = new uint[Length];
            foreach (uint[] input in honest.Select(h => h.Input))
            {
                for (int i = 0; i < Length; i++)
                {
                    expected[i] = unchecked(expected[i] + input[i]);
                }
            }
            Assert.Equal(expected, sum);
            Assert.Equal([StatusCode.FailedPrecondition, StatusCode.FailedPrecondition], declines);
            Assert.Equal(StatusCode.FailedPrecondition, second);
            // alice took dave for a dropout (revealed nothing of him); the server dropped only bob's shares of erin, not bob.
            Assert.Equal([dave.Index], outcomes[0].RejectedPeers);
            Assert.Empty(outcomes[1].RejectedPeers);
            Assert.Empty(outcomes[2].RejectedPeers);
            Assert.Equal(new[] { (bob, erin.Index) }, round.RejectedShares.Distinct());
            Assert.Equal(5, round.Survivors.Count);
            // Every honest participant goes on: its connection still serves calls after the round.
            foreach ((_, CoordinatorConnection connection, _, _) in honest)
            {
                HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
                Assert.True(heartbeat.HeartbeatIntervalSeconds > 0);
            }
        }
        finally
        {
            await stop.CancelAsync();
            coordinator.Host.Rounds.Finish(round);
            await Task.WhenAll(honest.Select(h => h.Outcome.ContinueWith(_ => { }, TaskScheduler.Default)));
            foreach ((EdgeIdentity identity, CoordinatorConnection connection, _, _) in honest)
            {
                connection.Dispose();
                identity.Dispose();
            }
            dave?.Dispose();
            erin?.Dispose();
        }
    }

    private static Task<StatusCode> Decline(ScriptedParticipant who) => BadMessageTests.Status(() => who.Connection.Edge.DeclineRoundAsync(
        new DeclineRoundRequest { Round = who.Round, Reason = DeclineReason.Busy, Rule = "busy", Detail = "hostile decline" }, who.Connection.Call(CancellationToken.None)).ResponseAsync);

    private static Task<ConfirmSurvivorsResponse> Confirm(ScriptedParticipant who, UploadMaskedInputResponse survivors) =>
        who.Connection.Edge.ConfirmSurvivorsAsync(new ConfirmSurvivorsRequest
        {
            Round = who.Round,
            Signature = ByteString.CopyFrom(KeyAdvertisement.SignSurvivors(who.Identity.Certificate, who.Round, survivors.AllSurvivors.Select(i => (int)i))),
        }, who.Connection.Call(CancellationToken.None)).ResponseAsync;

    private static uint[] RandomInput()
    {
        byte[] bytes = RandomNumberGenerator.GetBytes(4 * Length);
        return [.. Enumerable.Range(0, Length).Select(i => BitConverter.ToUInt32(bytes, 4 * i))];
    }

    // Polls a condition of the round (what the coordinator has accepted); the token guards against a hang.
    private static async Task WaitAsync(Func<bool> condition, CancellationToken cancellationToken)
    {
        while (!condition())
        {
            await Task.Delay(10, cancellationToken);
        }
    }
}
