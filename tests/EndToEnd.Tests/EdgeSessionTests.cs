using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;

namespace Federated.EndToEnd.Tests;

public sealed class EdgeSessionTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Run_RoundStartsWhileHeartbeating_InvitationDeliveredThenCancelledCleanly()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("dave"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var received = new TaskCompletionSource<RoundRef>(TaskCreationOptions.RunContinuationsAsynchronously);
        var session = new EdgeSession(connection, new RegisterRequest { ClientVersion = "test", Device = "cpu" });

        Task running = session.RunAsync((invitation, _) =>
        {
            received.TrySetResult(invitation);
            stop.Cancel();
            return Task.CompletedTask;
        }, stop.Token);
        // Wait until the session registered, then open a round that includes it.
        while (!coordinator.Host.State.Clients.List().Any(c => c.ClientId == "dave"))
        {
            await Task.Delay(50);
        }
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("session-run", 1, ["dave", "erin"], 16, 32, Degree: 1, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(30)));
        try
        {
            RoundRef invitation = await received.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running);

            Assert.Equal(round.Ref, invitation);
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }
}
