using System.Data.Common;

namespace Federated.Coordinator.State;

/// <summary>
/// Where the coordinator's state lives: read sessions and write units of work over one backend. A backend (SQLite
/// today) owns its connections, settings and migrations; the stores above it see System.Data.Common types only.
/// </summary>
internal abstract class StateDatabase : IDisposable
{
    private readonly AuditWriter _audit;
    private readonly TimeProvider _time;

    protected StateDatabase(AuditWriter audit, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(audit);
        ArgumentNullException.ThrowIfNull(time);
        _audit = audit;
        _time = time;
    }

    /// <summary>
    /// Checked at the start of every write transaction, inside it (a leader's fencing token): when it throws, nothing of
    /// that unit of work is written. Null where one process owns the state (SQLite).
    /// </summary>
    internal IWriteFence? Fence { get; set; }

    /// <summary>The number of schema migrations applied.</summary>
    public abstract int SchemaVersion { get; }

    /// <summary>
    /// Runs <paramref name="work"/> in one transaction and commits it before returning, so nothing is acknowledged
    /// unwritten; an exception rolls every write of it back, audit entries included. Every write of every store comes
    /// through here, after the <see cref="Fence"/> check.
    /// </summary>
    public T Write<T>(Func<UnitOfWork, T> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        DbConnection connection = Enter();
        try
        {
            using DbTransaction transaction = connection.BeginTransaction();
            var unit = new UnitOfWork(connection, transaction, _time.GetUtcNow(), _audit);
            Fence?.Check(unit);
            T result = work(unit);
            transaction.Commit();
            return result;
        }
        finally
        {
            Exit(connection);
        }
    }

    /// <inheritdoc cref="Write{T}"/>
    public void Write(Action<UnitOfWork> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Write<bool>(unit =>
        {
            work(unit);
            return true;
        });
    }

    /// <summary>Runs a read-only <paramref name="query"/> outside any write transaction.</summary>
    public T Read<T>(Func<StateSession, T> query)
    {
        ArgumentNullException.ThrowIfNull(query);
        DbConnection connection = Enter();
        try
        {
            return query(new StateSession(connection, transaction: null, _time.GetUtcNow()));
        }
        finally
        {
            Exit(connection);
        }
    }

    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>An open connection for one session; the caller hands it back through <see cref="Exit"/>.</summary>
    protected abstract DbConnection Enter();

    protected abstract void Exit(DbConnection connection);

    protected virtual void Dispose(bool disposing)
    {
        if (disposing)
        {
            _audit.Dispose();
        }
    }
}

/// <summary>A check every write transaction passes first, inside that transaction (see <see cref="StateDatabase.Fence"/>).</summary>
internal interface IWriteFence
{
    /// <summary>Throws when this process may no longer write (another coordinator holds the lease).</summary>
    void Check(StateSession transaction);
}
