using System.Security.Cryptography;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

public sealed class SecAggRoundTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private const int Length = 1000;

    [Fact]
    public async Task Round_ThreeClientsOverMutualTls_CoordinatorReleasesExactSum()
    {
        string[] names = ["alice", "bob", "carol"];
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("sum-run", 1, names, Length, 32, Degree: 2, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(30), MaxChunkBytes: 1024));
        Dictionary<string, uint[]> inputs = names.ToDictionary(n => n, _ => RandomVector());

        ParticipationOutcome[] outcomes = await Task.WhenAll(names.Select(n => Participate(n, inputs[n], round.Ref)));
        uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(ExpectedSum(inputs.Values), sum);
        Assert.All(outcomes, o => Assert.Equal(4UL * Length, o.UploadedBytes));
        Assert.All(outcomes, o => Assert.Empty(o.Dropped));
        Assert.Equal(RoundStage.Completed, round.Stage);
        coordinator.Host.Rounds.Finish(round);
    }

    [Fact]
    public async Task Round_OneClientDropsBeforeUpload_SumOfSurvivorsAfterStageDeadline()
    {
        string[] names = ["alice", "bob", "carol", "dave"];
        FakeTimeProvider clock = RoundClock.Create();
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("dropout-run", 1, names, Length, 24, Degree: 3, Threshold: 3, StageTimeout: TimeSpan.FromSeconds(3)), clock: clock);
        Dictionary<string, uint[]> inputs = names.ToDictionary(n => n, _ => RandomVector(bits: 24));

        Task<ParticipationOutcome>[] running = [.. names.Select(n => Participate(n, inputs[n], round.Ref, failTraining: n == "dave"))];
        await RoundClock.ExpireStageAsync(round, clock, RoundStage.MaskedInput, "dave");
        uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(ExpectedSum(inputs.Where(p => p.Key != "dave").Select(p => p.Value), bits: 24), sum);
        await Assert.ThrowsAsync<InvalidOperationException>(() => running[3]);
        ParticipationOutcome alice = await running[0];
        int daveIndex = round.Indices["dave"];
        Assert.Equal([daveIndex], alice.Dropped);
        coordinator.Host.Rounds.Finish(round);
    }

    [Fact]
    public async Task StageCalls_BadMessages_RefusedWithPreciseStatus()
    {
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("bad-run", 1, ["alice", "bob"], Length, 32, Degree: 1, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(30)));
        try
        {
            using EdgeIdentity erin = EdgeIdentity.Load(coordinator.Identity("erin"), coordinator.CaPath);
            using var asErin = new CoordinatorConnection(coordinator.Address, erin);
            using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
            using var asAlice = new CoordinatorConnection(coordinator.Address, alice);

            var outsider = await Assert.ThrowsAsync<RpcException>(() =>
                asErin.Edge.AdvertiseKeysAsync(new AdvertiseKeysRequest { Round = round.Ref }, asErin.Call(CancellationToken.None)).ResponseAsync);
            var oversize = await Assert.ThrowsAsync<RpcException>(() => Upload(asAlice, new MaskedInputChunk { Round = round.Ref, TotalBytes = 4UL * Length + 4, Data = Google.Protobuf.ByteString.CopyFrom(new byte[4]) }));
            var wrongStage = await Assert.ThrowsAsync<RpcException>(() => Upload(asAlice, new MaskedInputChunk { Round = round.Ref, TotalBytes = 4UL * Length, Data = Google.Protobuf.ByteString.CopyFrom(new byte[4]) }));
            var replay = await Assert.ThrowsAsync<RpcException>(() =>
                asAlice.Edge.AdvertiseKeysAsync(new AdvertiseKeysRequest { Round = new RoundRef { RunId = "bad-run", Round = 7 } }, asAlice.Call(CancellationToken.None)).ResponseAsync);
            var malformed = await Assert.ThrowsAsync<RpcException>(() =>
                asAlice.Edge.AdvertiseKeysAsync(new AdvertiseKeysRequest { Round = round.Ref, EncryptionPublicKey = Google.Protobuf.ByteString.CopyFrom(new byte[3]) }, asAlice.Call(CancellationToken.None)).ResponseAsync);
            var badDecline = await Assert.ThrowsAsync<RpcException>(() =>
                asAlice.Edge.DeclineRoundAsync(new DeclineRoundRequest { Round = round.Ref }, asAlice.Call(CancellationToken.None)).ResponseAsync);

            Assert.Equal(StatusCode.PermissionDenied, outsider.StatusCode);
            Assert.Equal(StatusCode.ResourceExhausted, oversize.StatusCode);
            Assert.Equal(StatusCode.FailedPrecondition, wrongStage.StatusCode);
            Assert.Equal(StatusCode.FailedPrecondition, replay.StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, malformed.StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, badDecline.StatusCode);
            Assert.Equal(RoundStage.AdvertiseKeys, round.Stage); // nothing above moved the round
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    [Fact]
    public async Task DeclineRound_TwiceAfterAdvertisingOrWithABadReplayRound_RefusedAndEachDeclineRecordedOnce()
    {
        string[] names = ["alice", "bob", "carol", "dave"];
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("decline-run", 4, names, Length, 32, Degree: 3, Threshold: 3, StageTimeout: TimeSpan.FromSeconds(60)));
        using var stop = new CancellationTokenSource();
        var connections = new List<(EdgeIdentity Identity, CoordinatorConnection Connection)>();
        try
        {
            foreach (string name in names)
            {
                var identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
                connections.Add((identity, new CoordinatorConnection(coordinator.Address, identity)));
            }
            CoordinatorConnection alice = connections[0].Connection, bob = connections[1].Connection, carol = connections[2].Connection;
            Task Decline(CoordinatorConnection c, DeclineReason reason, ulong lastCharged = 0) => c.Edge.DeclineRoundAsync(
                new DeclineRoundRequest { Round = round.Ref, Reason = reason, Rule = "test", Detail = "declined by the test", LastChargedRound = lastCharged }, c.Call(CancellationToken.None)).ResponseAsync;

            await Decline(alice, DeclineReason.Policy);
            var twice = await Assert.ThrowsAsync<RpcException>(() => Decline(alice, DeclineReason.Busy));
            // A replay decline moves the run's numbering forward only, and only with a replay reason.
            var backwards = await Assert.ThrowsAsync<RpcException>(() => Decline(carol, DeclineReason.ReplayedRound, lastCharged: 3));
            var tooFar = await Assert.ThrowsAsync<RpcException>(() => Decline(carol, DeclineReason.ReplayedRound, lastCharged: 4 + 100_001));
            var stray = await Assert.ThrowsAsync<RpcException>(() => Decline(carol, DeclineReason.Policy, lastCharged: 9));
            await Decline(carol, DeclineReason.ReplayedRound, lastCharged: 9);
            // Bob advertises his keys (the call waits for the roster); from then on leaving is a dropout, not a decline.
            await bob.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            var participant = new SecAggParticipant(bob, "bob");
            RoundManifest manifest = await participant.FetchManifestAsync(round.Ref, CancellationToken.None);
            Task advertising = participant.ParticipateAsync(manifest, (_, _) => Task.FromResult(new uint[Length]), stop.Token);
            while (!round.HasSubmitted("bob"))
            {
                Assert.False(advertising.IsCompleted, advertising.Exception?.ToString());
                await Task.Delay(20);
            }
            var late = await Assert.ThrowsAsync<RpcException>(() => Decline(bob, DeclineReason.Busy));
            // What run status shows: the stage waits for dave alone (alice and carol declined, bob advertised), until its deadline.
            (IReadOnlyList<string> waiting, DateTimeOffset? deadline) = round.Waiting();
            Assert.Equal(["dave"], waiting);
            Assert.Equal(round.Deadlines[0], deadline);

            Assert.Equal(StatusCode.FailedPrecondition, twice.StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, backwards.StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, tooFar.StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, stray.StatusCode);
            Assert.Equal(StatusCode.FailedPrecondition, late.StatusCode);
            Assert.Equal(9, round.ReplayedUpTo);
            var declines = coordinator.Host.State.Audit.Read(1, 100_000).Entries
                .Where(e => e.CanonicalJson.Contains("\"round.decline\"", StringComparison.Ordinal) && e.CanonicalJson.Contains("decline-run", StringComparison.Ordinal))
                .ToList();
            Assert.Equal(2, declines.Count);
            Assert.Contains(declines, e => e.CanonicalJson.Contains("\"reason\":\"ReplayedRound\"", StringComparison.Ordinal));
        }
        finally
        {
            await stop.CancelAsync();
            coordinator.Host.Rounds.Finish(round);
            foreach ((EdgeIdentity identity, CoordinatorConnection connection) in connections)
            {
                connection.Dispose();
                identity.Dispose();
            }
        }
    }

    [Fact]
    public async Task Manifest_SignedByCoordinator_VerifiesAndNamesThisClient()
    {
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("manifest-run", 2, ["alice", "erin"], Length, 32, Degree: 1, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(30)));
        try
        {
            using EdgeIdentity erin = EdgeIdentity.Load(coordinator.Identity("erin"), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, erin);
            await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);

            RoundManifest manifest = await new SecAggParticipant(connection, "erin").FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);

            Assert.Equal(round.Ref, heartbeat.Invitation);
            Assert.Equal("erin", manifest.Self.ClientId);
            Assert.Equal(["alice", "erin"], manifest.Participants.Select(p => p.ClientId));
            Assert.Equal(32, manifest.Secagg.GraphSeed.Length);
            // The invitation is consumed once the manifest was fetched.
            Assert.Null((await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None)).Invitation);
            await Assert.ThrowsAsync<InvalidDataException>(() => new SecAggParticipant(connection, "alice").FetchManifestAsync(round.Ref, CancellationToken.None));
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    private async Task<ParticipationOutcome> Participate(string name, uint[] input, RoundRef expected, bool failTraining = false)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
        Assert.Equal(expected, heartbeat.Invitation);
        var participant = new SecAggParticipant(connection, identity.Name);
        RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
        return await participant.ParticipateAsync(manifest, (_, _) =>
            failTraining ? throw new InvalidOperationException("local training crashed") : Task.FromResult<uint[]>([.. input]), CancellationToken.None);
    }

    private static async Task<UploadMaskedInputResponse> Upload(CoordinatorConnection connection, MaskedInputChunk chunk)
    {
        using AsyncClientStreamingCall<MaskedInputChunk, UploadMaskedInputResponse> call = connection.Edge.UploadMaskedInput(connection.Call(CancellationToken.None));
        await call.RequestStream.WriteAsync(chunk);
        await call.RequestStream.CompleteAsync();
        return await call.ResponseAsync;
    }

    private static uint[] RandomVector(int bits = 32)
    {
        byte[] bytes = RandomNumberGenerator.GetBytes(4 * Length);
        uint mask = bits == 32 ? uint.MaxValue : (1u << bits) - 1;
        return [.. Enumerable.Range(0, Length).Select(i => BitConverter.ToUInt32(bytes, 4 * i) & mask)];
    }

    private static uint[] ExpectedSum(IEnumerable<uint[]> vectors, int bits = 32)
    {
        uint mask = bits == 32 ? uint.MaxValue : (1u << bits) - 1;
        var sum = new uint[Length];
        foreach (uint[] v in vectors)
        {
            for (int i = 0; i < Length; i++)
            {
                sum[i] = unchecked(sum[i] + v[i]) & mask;
            }
        }
        return sum;
    }
}
