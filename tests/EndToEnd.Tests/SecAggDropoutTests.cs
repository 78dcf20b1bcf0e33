using System.Security.Cryptography;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Participants vanish at each SecAgg+ stage over mutual TLS (they stop talking right before sending that stage's
/// message, as a killed process would). With at least t survivors the coordinator releases exactly the sum of the
/// inputs it received; with fewer the round fails and releases nothing.
/// </summary>
public sealed class SecAggDropoutTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private const int Length = 256;
    private static readonly string[] s_names = ["alice", "bob", "carol", "dave"];
    private static readonly TimeSpan s_stageTimeout = TimeSpan.FromSeconds(4);

    [Theory]
    [InlineData(RoundStage.AdvertiseKeys)]
    [InlineData(RoundStage.ShareKeys)]
    [InlineData(RoundStage.MaskedInput)]
    [InlineData(RoundStage.Unmask)]
    public async Task Round_OneOfFourVanishesAtStage_ReleasesExactSumOfReceivedInputs(RoundStage stage)
    {
        // Connected and registered before the round opens, so the stage clock runs on the protocol, not on TLS handshakes.
        using Clients clients = await Clients.ConnectAsync(coordinator);
        FakeTimeProvider clock = RoundClock.Create();
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan($"drop-one-{stage}", 1, s_names, Length, 32, Degree: 3, Threshold: 3, StageTimeout: s_stageTimeout), clock: clock);
        try
        {
            Dictionary<string, uint[]> inputs = s_names.ToDictionary(n => n, _ => RandomVector());
            Task<ParticipationOutcome>[] running = [.. s_names.Select(n => ParticipateAsync(clients[n], n, inputs[n], round.Ref, n == "dave" ? stage : null))];

            // The stage closes on its deadline once it waits for nobody but dave (at unmasking, after the three others
            // signed the survivor set and the consistency check closed without dave's signature).
            if (stage == RoundStage.Unmask)
            {
                await RoundClock.ExpireConsistencyCheckAsync(round, clock, signers: 3);
            }
            await RoundClock.ExpireStageAsync(round, clock, stage, "dave");
            uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromSeconds(60));

            // A participant that vanished after uploading (at unmask) is in the sum: its masks are removed with the others' shares.
            IEnumerable<string> received = stage == RoundStage.Unmask ? s_names : s_names.Where(n => n != "dave");
            Assert.Equal(ExpectedSum(received.Select(n => inputs[n])), sum);
            Assert.Equal(stage == RoundStage.Unmask ? 4 : 3, round.Survivors.Count);
            await Assert.ThrowsAsync<DroppedOutException>(() => running[3]);
            ParticipationOutcome alice = await running[0];
            // Only a neighbour that shared keys and then sent no input has pairwise masks left to remove.
            Assert.Equal(stage == RoundStage.MaskedInput ? [round.Indices["dave"]] : [], alice.Dropped);
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    [Theory]
    [InlineData(RoundStage.AdvertiseKeys)]
    [InlineData(RoundStage.ShareKeys)]
    [InlineData(RoundStage.MaskedInput)]
    [InlineData(RoundStage.Unmask)]
    public async Task Round_TwoOfFourVanishAtStage_FailsBelowThresholdAndReleasesNothing(RoundStage stage)
    {
        using Clients clients = await Clients.ConnectAsync(coordinator);
        FakeTimeProvider clock = RoundClock.Create();
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan($"drop-two-{stage}", 1, s_names, Length, 32, Degree: 3, Threshold: 3, StageTimeout: s_stageTimeout), clock: clock);
        try
        {
            Task<ParticipationOutcome>[] running = [.. s_names.Select(n => ParticipateAsync(clients[n], n, RandomVector(), round.Ref, n is "carol" or "dave" ? stage : null))];

            // The stage closes on its deadline once it waits for nobody but carol and dave (at unmasking, once the
            // consistency check closed with two signatures, alice and bob refuse to go on and count as gone).
            if (stage == RoundStage.Unmask)
            {
                await RoundClock.ExpireConsistencyCheckAsync(round, clock, signers: 2);
            }
            await RoundClock.ExpireStageAsync(round, clock, stage, ["carol", "dave"], name => running[Array.IndexOf(s_names, name)].IsCompleted);

            var failed = await Assert.ThrowsAsync<Federated.Aggregation.SecureAggregation.InsufficientSurvivorsException>(() => round.Sum.WaitAsync(TimeSpan.FromSeconds(60)));

            Assert.Equal(RoundStage.Failed, round.Stage);
            Assert.Contains("threshold", failed.Message, StringComparison.OrdinalIgnoreCase);
            // Before unmasking, the survivors' long polls end with the failure. At unmasking, only two of the three
            // signatures the consistency check needs arrive: the survivors refuse to reveal any share.
            foreach (Task<ParticipationOutcome> participant in running[..2])
            {
                if (stage == RoundStage.Unmask)
                {
                    var refused = await Assert.ThrowsAsync<InvalidDataException>(() => participant);
                    Assert.Contains("consistency check: 2 of", refused.Message, StringComparison.Ordinal);
                }
                else
                {
                    await Assert.ThrowsAsync<RpcException>(() => participant);
                }
            }
            await Assert.ThrowsAsync<DroppedOutException>(() => running[3]);
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    private static async Task<ParticipationOutcome> ParticipateAsync(CoordinatorConnection connection, string name, uint[] input, RoundRef expected, RoundStage? vanishAt)
    {
        HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
        Assert.Equal(expected, heartbeat.Invitation);
        var participant = new SecAggParticipant(connection, name)
        {
            BeforeStage = (stage, _) => stage == vanishAt ? throw new DroppedOutException($"{name} vanished before {stage}") : Task.CompletedTask,
        };
        RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
        // A copy: the participant masks the vector it is given in place, and the test sums the originals.
        return await participant.ParticipateAsync(manifest, (_, _) => Task.FromResult<uint[]>([.. input]), CancellationToken.None);
    }

    /// <summary>The four participants' registered connections.</summary>
    private sealed class Clients : IDisposable
    {
        private readonly List<IDisposable> _owned = [];
        private readonly Dictionary<string, CoordinatorConnection> _connections = new(StringComparer.Ordinal);

        public CoordinatorConnection this[string name] => _connections[name];

        public static async Task<Clients> ConnectAsync(CoordinatorFixture coordinator)
        {
            var clients = new Clients();
            foreach (string name in s_names)
            {
                var identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
                var connection = new CoordinatorConnection(coordinator.Address, identity);
                clients._owned.Add(connection);
                clients._owned.Add(identity);
                clients._connections[name] = connection;
                await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            }
            return clients;
        }

        public void Dispose()
        {
            foreach (IDisposable owned in _owned)
            {
                owned.Dispose();
            }
        }
    }

    private static uint[] RandomVector()
    {
        byte[] bytes = RandomNumberGenerator.GetBytes(4 * Length);
        return [.. Enumerable.Range(0, Length).Select(i => BitConverter.ToUInt32(bytes, 4 * i))];
    }

    private static uint[] ExpectedSum(IEnumerable<uint[]> vectors)
    {
        var sum = new uint[Length];
        foreach (uint[] v in vectors)
        {
            for (int i = 0; i < Length; i++)
            {
                sum[i] = unchecked(sum[i] + v[i]);
            }
        }
        return sum;
    }
}
