using Federated.Coordinator;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>Issue 8's limits on real loopback sockets: a client over its rate or size limit is refused, not the server.</summary>
public sealed class LimitTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Heartbeat_ClientOverItsRateLimit_ResourceExhaustedWhileAnotherClientSucceeds()
    {
        var logs = new CapturedLogs();
        // A period of an hour: the bucket cannot refill during the test, so the outcome does not depend on timing.
        await using CoordinatorHost host = CoordinatorHost.Create(
            new CoordinatorOptions
            {
                Pki = coordinator.Pki,
                Port = 0,
                Address = "127.0.0.1",
                State = Path.Combine(coordinator.Root, "rate-limited.db"),
                RateLimitCalls = 3,
                RateLimitBurst = 3,
                RateLimitPeriodSeconds = 3600,
            },
            logging => logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        await host.StartAsync(CancellationToken.None);
        using EdgeIdentity bob = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using EdgeIdentity carol = EdgeIdentity.Load(coordinator.Identity("carol"), coordinator.CaPath);
        using var noisy = new CoordinatorConnection(host.Address, bob);
        using var quiet = new CoordinatorConnection(host.Address, carol);

        await noisy.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);
        await noisy.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
        await noisy.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
        var refused = await Assert.ThrowsAsync<RpcException>(() => noisy.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None));
        RegisterResponse other = await quiet.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);
        HeartbeatResponse otherHeartbeat = await quiet.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);

        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Contains("'bob' exceeded its rate limit of 3 calls per 3600 s", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("carol", other.ClientId);
        Assert.True(otherHeartbeat.HeartbeatIntervalSeconds > 0);
        Assert.Contains(logs.Lines, l => l.EventId == 1004 && l.Message.Contains("from bob", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Register_MessageOverSizeCap_ResourceExhaustedAndNothingWritten()
    {
        using EdgeIdentity dave = EdgeIdentity.Load(coordinator.Identity("dave"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, dave);
        var oversized = new RegisterRequest { ClientVersion = new string('x', CoordinatorHost.MaxReceiveMessageBytes + 1) };

        var ex = await Assert.ThrowsAsync<RpcException>(() => connection.RegisterAsync(oversized, CancellationToken.None));
        RegisterResponse afterwards = await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);

        Assert.Equal(StatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal("dave", afterwards.ClientId);
        Assert.Equal("test", Assert.Single(coordinator.Host.State.Clients.List(), c => c.ClientId == "dave").ClientVersion);
    }

    [Fact]
    public void Validate_RateLimitOutOfRange_NamesTheAllowedRange()
    {
        var options = new CoordinatorOptions { Pki = "pki", RateLimitCalls = 10, RateLimitBurst = 5 };

        var ex = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);

        Assert.Contains("rate limit burst must be in 10 (the calls per period)..1000000", ex.Message, StringComparison.Ordinal);
    }
}
