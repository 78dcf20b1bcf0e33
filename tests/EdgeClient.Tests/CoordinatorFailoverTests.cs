using Federated.EdgeClient.Cli;
using Federated.EdgeClient.Transport;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EdgeClient.Tests;

/// <summary>
/// The edge client's walk over a --coordinator list, driven by a scripted attempt function on a fake clock: the order
/// of tries, the backoff between them, stickiness to the one that serves, and what ends the walk.
/// </summary>
public sealed class CoordinatorFailoverTests
{
    private static readonly Uri s_a = new("https://a:7443");
    private static readonly Uri s_b = new("https://b:7443");
    private static readonly Uri s_c = new("https://c:7443");
    private static readonly TimeSpan s_safety = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _time = new();
    private readonly List<Uri> _attempts = [];
    private readonly SemaphoreSlim _attempted = new(0);
    private readonly List<(Uri Failed, string Why, Uri Next, TimeSpan Wait)> _moves = [];
    private readonly List<(Uri Serving, Uri From)> _switches = [];

    private readonly SemaphoreSlim _moved = new(0);

    private CoordinatorFailover Failover(params Uri[] coordinators)
    {
        // Without xUnit's context the continuation after a fake-clock delay runs inside Advance, so "not yet" is exact.
        SynchronizationContext.SetSynchronizationContext(null);
        return new(coordinators, _time)
        {
            MovingOn = (failed, why, next, wait) =>
            {
                _moves.Add((failed, why, next, wait));
                _moved.Release();
            },
            Switched = (serving, from) => _switches.Add((serving, from)),
        };
    }
    /// <summary>An attempt that records itself, then does what <paramref name="script"/> says for that coordinator.</summary>
    private Func<Uri, Action, CancellationToken, Task> Attempts(Func<Uri, Action, Task> script) => async (coordinator, served, _) =>
    {
        _attempts.Add(coordinator);
        _attempted.Release();
        await script(coordinator, served);
    };

    private async Task NextAttemptAsync() => Assert.True(await _attempted.WaitAsync(s_safety), "no further attempt was made");

    private async Task<(Uri Failed, string Why, Uri Next, TimeSpan Wait)> NextMoveAsync()
    {
        Assert.True(await _moved.WaitAsync(s_safety), "no move to the next coordinator");
        return _moves[^1];
    }

    private static RpcException Unavailable(string detail) => new(new Status(StatusCode.Unavailable, detail));

    [Fact]
    public async Task RunAsync_FirstUnreachable_TriesSecondOnlyAfterTheBackoffAndReportsTheSwitch()
    {
        CoordinatorFailover failover = Failover(s_a, s_b);
        Task run = failover.RunAsync(Attempts((coordinator, served) =>
        {
            if (coordinator == s_a)
            {
                throw Unavailable("Connection refused");
            }
            served();
            return Task.CompletedTask;
        }), RunCommand.NotServingReason, CancellationToken.None);
        await NextAttemptAsync();

        (Uri failed, string why, Uri next, TimeSpan wait) = await NextMoveAsync();
        Assert.Equal((s_a, s_b), (failed, next));
        Assert.Contains("Connection refused", why, StringComparison.Ordinal);
        // ReconnectBackoff's first step from the 1 s default: [0.5 s, 1 s].
        Assert.InRange(wait, TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(1));
        _time.Advance(wait - TimeSpan.FromTicks(1));
        Assert.Equal([s_a], _attempts);

        _time.Advance(TimeSpan.FromTicks(1));
        await NextAttemptAsync();
        await run.WaitAsync(s_safety);

        Assert.Equal([s_a, s_b], _attempts);
        Assert.Equal([(s_b, s_a)], _switches);
        Assert.Equal(s_b, failover.Serving);
    }

    [Fact]
    public async Task RunAsync_ServingCoordinatorFails_MovesOnInListOrderWithTheBackoffStartedOver()
    {
        var cFails = new TaskCompletionSource();
        int aTries = 0;
        CoordinatorFailover failover = Failover(s_a, s_b, s_c);
        Task run = failover.RunAsync(Attempts(async (coordinator, served) =>
        {
            if (coordinator == s_a && ++aTries == 1)
            {
                throw Unavailable("Connection refused");
            }
            if (coordinator == s_b)
            {
                throw new RpcException(new Status(StatusCode.FailedPrecondition, "standby; the leader is https://c:7443"));
            }
            served();
            if (coordinator == s_c)
            {
                // c serves rounds until it goes away; nothing else is tried meanwhile.
                await cFails.Task;
                throw Unavailable("leader lost its lease");
            }
        }), RunCommand.NotServingReason, CancellationToken.None);

        await NextAttemptAsync();
        _time.Advance((await NextMoveAsync()).Wait);
        await NextAttemptAsync();
        (_, string why, _, TimeSpan wait) = await NextMoveAsync();
        Assert.Equal("standby; the leader is https://c:7443", why);
        // Two failures in a row: the second wait is ReconnectBackoff's second step, [1 s, 2 s].
        Assert.InRange(wait, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2));
        _time.Advance(wait);
        await NextAttemptAsync();
        Assert.Equal([(s_c, s_a)], _switches);

        // However long c serves, nothing else is tried.
        _time.Advance(TimeSpan.FromHours(1));
        Assert.Equal([s_a, s_b, s_c], _attempts);

        cFails.SetResult();
        _time.Advance((await NextMoveAsync()).Wait);
        await NextAttemptAsync();
        await run.WaitAsync(s_safety);

        // After c, the list wraps to a (not back to the standby b), and c's serving reset the backoff to its first step.
        Assert.Equal([s_a, s_b, s_c, s_a], _attempts);
        Assert.Equal((s_c, s_a), (_moves[^1].Failed, _moves[^1].Next));
        Assert.InRange(_moves[^1].Wait, TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(1));
        Assert.Equal([(s_c, s_a), (s_a, s_c)], _switches);
    }

    [Fact]
    public async Task RunAsync_FirstServes_NoSwitchReported()
    {
        CoordinatorFailover failover = Failover(s_a, s_b);
        await failover.RunAsync(Attempts((_, served) =>
        {
            served();
            return Task.CompletedTask;
        }), RunCommand.NotServingReason, CancellationToken.None).WaitAsync(s_safety);

        Assert.Equal([s_a], _attempts);
        Assert.Equal(s_a, failover.Serving);
        Assert.Empty(_switches);
        Assert.Empty(_moves);
    }

    [Fact]
    public async Task RunAsync_RefusedIdentity_RethrownWithoutTryingTheNext()
    {
        var ex = await Assert.ThrowsAsync<RpcException>(() => Failover(s_a, s_b).RunAsync(
            Attempts((_, _) => throw new RpcException(new Status(StatusCode.PermissionDenied, "revoked"))),
            RunCommand.NotServingReason, CancellationToken.None).WaitAsync(s_safety));

        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        Assert.Equal([s_a], _attempts);
        Assert.Empty(_moves);
    }

    [Fact]
    public async Task RunAsync_CancelledDuringTheWait_StopsWithoutTryingTheNext()
    {
        using var cancel = new CancellationTokenSource();
        Task run = Failover(s_a, s_b).RunAsync(Attempts((_, _) => throw Unavailable("Connection refused")), RunCommand.NotServingReason, cancel.Token);
        await NextAttemptAsync();

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run.WaitAsync(s_safety));
        Assert.Equal([s_a], _attempts);
    }

    [Theory]
    [InlineData(StatusCode.Unavailable, "standby; the leader is https://b:7443", true)]
    [InlineData(StatusCode.FailedPrecondition, "standby; the leader is https://b:7443", true)]
    [InlineData(StatusCode.DeadlineExceeded, "deadline", true)]
    [InlineData(StatusCode.PermissionDenied, "revoked", false)]
    [InlineData(StatusCode.Unauthenticated, "no certificate", false)]
    [InlineData(StatusCode.InvalidArgument, "bad request", false)]
    public void NotServingReason_Status_MovesOnOnlyForOutagesAndStandbys(StatusCode status, string detail, bool movesOn)
    {
        string? reason = RunCommand.NotServingReason(new RpcException(new Status(status, detail)));

        Assert.Equal(movesOn, reason is not null);
        if (movesOn)
        {
            Assert.Contains(detail, reason, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void NotServingReason_RefusedCertificate_IsPermanent()
    {
        // What RunCommand makes of a coordinator certificate the client refused at the handshake: never a failover.
        var refused = new PermanentConnectionException("the coordinator at https://a:7443 presented a certificate this client refuses",
            new RpcException(new Status(StatusCode.Unavailable, "handshake failed")));

        Assert.Null(RunCommand.NotServingReason(refused));
        Assert.NotNull(RunCommand.NotServingReason(new CoordinatorRefusedException("certificate_revoked", "the coordinator's certificate is refused")));
    }

    [Fact]
    public void Constructor_NoCoordinators_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new CoordinatorFailover([], _time));
    }
}
