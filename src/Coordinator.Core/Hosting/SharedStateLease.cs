using System.Data.Common;
using Federated.Coordinator.State;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Federated.Coordinator;

/// <summary>
/// The leader lease of a coordinator whose state is a PostgreSQL database that standbys may share: the lease's own
/// small connection pool (renewals never queue behind the state's writes) and the lease, installed as the state's
/// write fence from the moment the state is opened, so a standby cannot write even by mistake.
/// </summary>
internal sealed class SharedStateLease : IDisposable
{
    private readonly NpgsqlDataSource _dataSource;

    private SharedStateLease(NpgsqlDataSource dataSource, LeaderLease lease)
    {
        _dataSource = dataSource;
        Lease = lease;
    }

    public LeaderLease Lease { get; }

    /// <summary>The lease for <paramref name="state"/> when it is on PostgreSQL (installed as its fence); null on SQLite (the sole coordinator).</summary>
    public static SharedStateLease? For(CoordinatorState state, CoordinatorOptions options)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(options);
        if (state.Location.Backend != StateBackend.Postgres)
        {
            return null;
        }
        var builder = new NpgsqlDataSourceBuilder(state.Location.ConnectionString);
        builder.ConnectionStringBuilder.MaxPoolSize = 4;
        builder.ConnectionStringBuilder.ApplicationName = "federated-coordinator-lease";
        // A renewal must not hang past the lease: connect within one renewal interval, and a statement (whose lock wait is
        // one interval) within two.
        var timing = new LeaseTiming(options.LeaseSeconds);
        int seconds = Math.Max(1, (int)Math.Ceiling(timing.RenewInterval.TotalSeconds));
        builder.ConnectionStringBuilder.Timeout = seconds;
        builder.ConnectionStringBuilder.CommandTimeout = 2 * seconds;
        NpgsqlDataSource dataSource = builder.Build();
        // The bound address is not known yet (port 0 in tests): Advertise sets it before the lease is first taken.
        var lease = new LeaderLease(dataSource, LeaderLease.NewHolderId(), "https://" + options.Address, timing);
        state.Database.Fence = lease;
        return new SharedStateLease(dataSource, lease);
    }

    /// <summary>Creates the lease table when missing.</summary>
    public Task PrepareAsync(CancellationToken cancellationToken) => LeaderLease.EnsureTableAsync(_dataSource, cancellationToken);

    /// <summary>At a clean shutdown: gives the lease up, so a standby takes over at its next poll instead of after the lease runs out.</summary>
    public async Task ReleaseAsync(ILogger logger)
    {
        if (Lease.Token == 0)
        {
            return;
        }
        try
        {
            using var timeout = new CancellationTokenSource(Lease.Timing.RenewInterval);
            await Lease.ReleaseAsync(timeout.Token);
            CoordinatorLog.LeaseReleased(logger);
        }
        catch (Exception ex) when (ex is DbException or TimeoutException or OperationCanceledException)
        {
            // The lease then runs out by itself: the standby takes over a lease duration later.
            CoordinatorLog.LeaseRenewFailed(logger, ex.Message);
        }
    }

    public void Dispose()
    {
        Lease.Dispose();
        _dataSource.Dispose();
    }
}
