namespace Federated.Coordinator;

/// <summary>
/// Whether this coordinator serves rounds or stands by, and who leads: read by the standby gate on every call and by
/// the health check. A coordinator on SQLite is the sole coordinator and always serves; on PostgreSQL it serves only
/// while it holds the leader lease, and only for the lease's duration after its last renewal by its own monotonic
/// clock, so a process that wakes from a pause refuses calls before it has even asked the database.
/// </summary>
internal sealed class Leadership
{
    private readonly TimeProvider _time;
    private readonly TimeSpan _validFor;
    private readonly TaskCompletionSource _leading = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _renewedAt;
    private volatile bool _leader;
    private volatile string? _leaderAddress;

    private Leadership(TimeProvider time, TimeSpan validFor, bool leader)
    {
        _time = time;
        _validFor = validFor;
        _leader = leader;
        _renewedAt = time.GetTimestamp();
        if (leader)
        {
            _leading.SetResult();
        }
    }

    /// <summary>The only coordinator of its state (SQLite): always serving.</summary>
    public static Leadership Sole(TimeProvider time) => new(time, Timeout.InfiniteTimeSpan, leader: true);

    /// <summary>A coordinator that shares its state: a standby until it takes the lease of <paramref name="lease"/>'s duration.</summary>
    public static Leadership Shared(TimeProvider time, TimeSpan lease) => new(time, lease, leader: false);

    /// <summary>Whether this process needs the lease to serve (its state is shared).</summary>
    public bool IsShared => _validFor != Timeout.InfiniteTimeSpan;

    /// <summary>True while this coordinator may serve rounds and write.</summary>
    public bool Serving => _leader && (!IsShared || _time.GetElapsedTime(Volatile.Read(ref _renewedAt)) < _validFor);

    /// <summary>The leader's advertised address as this standby last read it; null when unknown (no lease yet, or this process's ran out).</summary>
    public string? LeaderAddress => _leader && !Serving ? null : _leaderAddress;

    /// <summary>What a standby answers calls with (a client of a coordinator list moves on to the next on UNAVAILABLE).</summary>
    public string StandbyDetail => _leader
        ? "standby; this coordinator's leader lease ran out before it could renew it"
        : _leaderAddress is { } address
            ? $"standby; the leader is {address}"
            : "standby; no coordinator holds the leader lease yet";

    /// <summary>Completes when this process first leads (at once on SQLite); background writers wait on it.</summary>
    public Task WhenLeading(CancellationToken cancellationToken) => _leading.Task.WaitAsync(cancellationToken);

    /// <summary>Still a standby; <paramref name="leaderAddress"/> is who holds the lease now (null: nobody).</summary>
    internal void StandBy(string? leaderAddress)
    {
        _leader = false;
        _leaderAddress = leaderAddress;
    }

    /// <summary>The lease was taken (or renewed) by a request sent at <paramref name="requestedAt"/> (a <see cref="TimeProvider.GetTimestamp"/>).</summary>
    internal void Renewed(long requestedAt, string ownAddress)
    {
        Volatile.Write(ref _renewedAt, requestedAt);
        _leaderAddress = ownAddress;
        _leader = true;
        _leading.TrySetResult();
    }

    /// <summary>The lease was lost: nothing more is served.</summary>
    internal void Depose(string? leaderAddress)
    {
        _leader = false;
        _leaderAddress = leaderAddress;
    }
}
