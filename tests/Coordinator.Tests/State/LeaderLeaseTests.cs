using Federated.Coordinator.State;
using Federated.TestKit;
using Npgsql;

namespace Federated.Coordinator.Tests.State;

/// <summary>The leader lease and its write fence on a real PostgreSQL: one holder at a time, takeover bumps the token, stale writes never commit.</summary>
public sealed class LeaderLeaseTests : IDisposable
{
    private readonly NpgsqlDataSource _dataSource;

    public LeaderLeaseTests()
    {
        _dataSource = NpgsqlDataSource.Create(PostgresServer.Shared.CreateDatabase());
        LeaderLease.EnsureTableAsync(_dataSource, CancellationToken.None).GetAwaiter().GetResult();
        Execute("CREATE TABLE probe (n INTEGER NOT NULL)");
    }

    public void Dispose() => _dataSource.Dispose();

    [Fact]
    public async Task TryAcquire_TwoLeasesCompete_OnlyOneHolds()
    {
        using LeaderLease first = NewLease("https://first:7443");
        using LeaderLease second = NewLease("https://second:7443");

        LeaseAttempt taken = await first.TryAcquireAsync(CancellationToken.None);
        LeaseAttempt refused = await second.TryAcquireAsync(CancellationToken.None);

        Assert.True(taken.Acquired);
        Assert.Equal(1, first.Token);
        Assert.False(refused.Acquired);
        Assert.Equal(0, second.Token);
        Assert.Equal("https://first:7443", refused.Current!.Address);
        Assert.Equal(first.Holder, refused.Current.Holder);
        Assert.False(refused.Current.Expired);
    }

    [Fact]
    public async Task TryAcquire_LeaseExpired_TakesOverWithNextToken()
    {
        using LeaderLease first = NewLease("https://first:7443");
        using LeaderLease second = NewLease("https://second:7443");
        Assert.True((await first.TryAcquireAsync(CancellationToken.None)).Acquired);

        ExpireLease();
        LeaseAttempt takeover = await second.TryAcquireAsync(CancellationToken.None);

        Assert.True(takeover.Acquired);
        Assert.Equal(2, second.Token);
        LeaseHolder row = (await second.ReadAsync(CancellationToken.None))!;
        Assert.Equal((second.Holder, "https://second:7443", 2L, false), (row.Holder, row.Address, row.Token, row.Expired));
    }

    [Fact]
    public async Task Renew_AfterTakeover_FalseAndLost()
    {
        using LeaderLease first = NewLease("https://first:7443");
        using LeaderLease second = NewLease("https://second:7443");
        await first.TryAcquireAsync(CancellationToken.None);
        Assert.True(await first.RenewAsync(CancellationToken.None));

        ExpireLease();
        await second.TryAcquireAsync(CancellationToken.None);
        bool renewed = await first.RenewAsync(CancellationToken.None);

        Assert.False(renewed);
        Assert.Equal(0, first.Token);
        Assert.True(first.Lost.IsCancellationRequested);
        Assert.Contains("https://second:7443 took the lease over (token 2)", first.LostReason, StringComparison.Ordinal);
        await Assert.ThrowsAsync<InvalidOperationException>(() => first.TryAcquireAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Renew_WhileHeld_ExtendsExpiry()
    {
        using LeaderLease lease = NewLease("https://first:7443");
        await lease.TryAcquireAsync(CancellationToken.None);
        Execute("UPDATE coordinator_lease SET expires_at = now() + interval '1 second'");

        Assert.True(await lease.RenewAsync(CancellationToken.None));

        Assert.True(Scalar<bool>("SELECT expires_at > now() + interval '7 seconds' FROM coordinator_lease"));
        Assert.Equal(1, lease.Token);
    }

    [Fact]
    public async Task Release_StandbyTakesOverAtOnce()
    {
        using LeaderLease first = NewLease("https://first:7443");
        using LeaderLease second = NewLease("https://second:7443");
        await first.TryAcquireAsync(CancellationToken.None);

        await first.ReleaseAsync(CancellationToken.None);

        Assert.True((await second.TryAcquireAsync(CancellationToken.None)).Acquired);
        Assert.Equal(2, second.Token);
        Assert.Throws<LeaseLostException>(() => Write(first, 1));
    }

    [Fact]
    public void Check_NeverAcquired_RefusesTheWrite()
    {
        using LeaderLease standby = NewLease("https://standby:7443");

        var ex = Assert.Throws<LeaseLostException>(() => Write(standby, 1));

        Assert.Contains("standby", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, Scalar<long>("SELECT count(*) FROM probe"));
    }

    [Fact]
    public async Task Check_Holder_WriteCommits()
    {
        using LeaderLease lease = NewLease("https://first:7443");
        await lease.TryAcquireAsync(CancellationToken.None);

        Write(lease, 7);

        Assert.Equal(7, Scalar<int>("SELECT n FROM probe"));
    }

    [Fact]
    public async Task Check_TransactionBegunBeforeTakeoverCheckedAfter_RefusedAndRolledBack()
    {
        using LeaderLease stale = NewLease("https://first:7443");
        using LeaderLease standby = NewLease("https://second:7443");
        await stale.TryAcquireAsync(CancellationToken.None);
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();

        // The stale leader's transaction is open (it was paused here) when the standby takes over.
        ExpireLease();
        Assert.True((await standby.TryAcquireAsync(CancellationToken.None)).Acquired);
        var session = new StateSession(connection, transaction, DateTimeOffset.UtcNow);

        Assert.Throws<LeaseLostException>(() => stale.Check(session));

        Assert.True(stale.Lost.IsCancellationRequested);
        await transaction.RollbackAsync();
        Assert.Equal(0, Scalar<long>("SELECT count(*) FROM probe"));
    }

    [Fact]
    public async Task Check_PassedBeforeTakeover_TakeoverWaitsForTheCommitAndLaterWritesAreRefused()
    {
        using LeaderLease stale = NewLease("https://first:7443");
        using LeaderLease standby = NewLease("https://second:7443");
        await stale.TryAcquireAsync(CancellationToken.None);
        ExpireLease();
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();
        var session = new StateSession(connection, transaction, DateTimeOffset.UtcNow);
        stale.Check(session);
        session.Execute("INSERT INTO probe (n) VALUES (1)");

        // The takeover blocks on the row lock the checked write holds, until that write commits.
        Task<LeaseAttempt> takeover = standby.TryAcquireAsync(CancellationToken.None);
        await WaitForLockWaiterAsync();
        Assert.False(takeover.IsCompleted);
        await transaction.CommitAsync();
        LeaseAttempt taken = await takeover;

        Assert.True(taken.Acquired);
        Assert.Equal(2, standby.Token);
        Assert.Equal(1, Scalar<long>("SELECT count(*) FROM probe"));
        Assert.Throws<LeaseLostException>(() => Write(stale, 2));
        Assert.Equal(1, Scalar<long>("SELECT count(*) FROM probe"));
        Write(standby, 3);
        Assert.Equal(2, Scalar<long>("SELECT count(*) FROM probe"));
    }

    [Fact]
    public async Task Check_HolderPausedInsideAWriteTransaction_ServerEndsItsSessionAndStandbyTakesOver()
    {
        using LeaderLease stale = NewLease("https://first:7443", seconds: LeaseTiming.MinSeconds);
        using LeaderLease standby = NewLease("https://second:7443", seconds: LeaseTiming.MinSeconds);
        await stale.TryAcquireAsync(CancellationToken.None);
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync();
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync();
        var session = new StateSession(connection, transaction, DateTimeOffset.UtcNow);
        stale.Check(session);
        session.Execute("INSERT INTO probe (n) VALUES (1)");

        // Paused: the transaction sits idle holding the row lock (an UPDATE to expire the lease would wait on it too, so
        // the 2 s lease runs out by itself); polls as a standby does until the server ends the idle session.
        LeaseAttempt attempt = new(false, null);
        for (int i = 0; i < 200 && !attempt.Acquired; i++)
        {
            attempt = await standby.TryAcquireAsync(CancellationToken.None);
            if (!attempt.Acquired)
            {
                await Task.Delay(standby.Timing.PollInterval);
            }
        }

        Assert.True(attempt.Acquired);
        await Assert.ThrowsAnyAsync<Exception>(() => transaction.CommitAsync());
        Assert.Equal(0, Scalar<long>("SELECT count(*) FROM probe"));
    }

    private LeaderLease NewLease(string address, double seconds = LeaseTiming.DefaultSeconds) =>
        new(_dataSource, LeaderLease.NewHolderId(), address, new LeaseTiming(seconds));

    /// <summary>A write through the fence as StateDatabase.Write does it: check first, inside the transaction, then the work.</summary>
    private void Write(LeaderLease lease, int n)
    {
        using NpgsqlConnection connection = _dataSource.OpenConnection();
        using NpgsqlTransaction transaction = connection.BeginTransaction();
        var session = new StateSession(connection, transaction, DateTimeOffset.UtcNow);
        lease.Check(session);
        session.Execute("INSERT INTO probe (n) VALUES (@n)", ("n", n));
        transaction.Commit();
    }

    /// <summary>Makes the lease run out now (the database's clock moves on without waiting for it).</summary>
    private void ExpireLease() => Execute("UPDATE coordinator_lease SET expires_at = now() - interval '1 second'");

    private async Task WaitForLockWaiterAsync()
    {
        for (int i = 0; i < 500; i++)
        {
            if (Scalar<long>("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") > 0)
            {
                return;
            }
            await Task.Delay(20);
        }
        throw new TimeoutException("the takeover never waited on the lease row lock");
    }

    private void Execute(string sql)
    {
        using NpgsqlConnection connection = _dataSource.OpenConnection();
        using var command = new NpgsqlCommand(sql, connection);
        command.ExecuteNonQuery();
    }

    private T Scalar<T>(string sql)
    {
        using NpgsqlConnection connection = _dataSource.OpenConnection();
        using var command = new NpgsqlCommand(sql, connection);
        return (T)command.ExecuteScalar()!;
    }
}
