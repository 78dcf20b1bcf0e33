using System.Data.Common;

namespace Federated.Coordinator.State;

/// <summary>
/// Where the coordinator's state lives: read sessions and write units of work over one backend. A backend (SQLite or
/// PostgreSQL) owns its connections, settings and migrations; the stores above it see System.Data.Common types only.
/// </summary>
internal abstract class StateDatabase : IDisposable
{
    private readonly AuditWriter _audit;
    private readonly TimeProvider _time;
    private readonly Lock _lossGate = new();

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
        ThrowIfLost();
        DbConnection? connection = null;
        try
        {
            connection = Enter(write: true);
            using DbTransaction transaction = connection.BeginTransaction();
            var unit = new UnitOfWork(connection, transaction, _time.GetUtcNow(), _audit);
            Fence?.Check(unit);
            T result = work(unit);
            transaction.Commit();
            return result;
        }
        catch (Exception ex) when (IsConnectionLost(ex))
        {
            // Whether a commit that met a lost connection took effect is unknown here: the coordinator stops writing
            // (and serving) rather than guess; the next start reads what the database holds.
            throw Lose(ex);
        }
        finally
        {
            if (connection is not null)
            {
                Exit(connection, write: true);
            }
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
        ThrowIfLost();
        for (int attempt = 1; ; attempt++)
        {
            DbConnection? connection = null;
            try
            {
                connection = Enter(write: false);
                return query(new StateSession(connection, transaction: null, _time.GetUtcNow()));
            }
            catch (Exception ex) when (IsConnectionLost(ex) && attempt == 1)
            {
                // A pooled connection the server closed meanwhile: a read changes nothing, so it is tried once more on a
                // fresh connection before the database counts as lost.
                ForgetConnections();
            }
            catch (Exception ex) when (IsConnectionLost(ex))
            {
                throw Lose(ex);
            }
            finally
            {
                if (connection is not null)
                {
                    Exit(connection, write: false);
                }
            }
        }
    }

    /// <summary>Why the database counts as lost (a connection failed while serving); null while it is not.</summary>
    public string? LostReason { get; private set; }

    /// <summary>
    /// Raised once, from the thread whose read or write met the failure, when the database is lost: from then on every
    /// read and write throws <see cref="StateUnavailableException"/>, so nothing is answered from memory.
    /// </summary>
    public event Action<string>? Lost;

    /// <summary>What errors and logs name this database by (a path, or a URI without the password).</summary>
    public abstract string Name { get; }

    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// An open connection for one session (<paramref name="write"/>: for one write transaction, serialized with every
    /// other write of this process); the caller hands it back through <see cref="Exit"/>.
    /// </summary>
    protected abstract DbConnection Enter(bool write);

    protected abstract void Exit(DbConnection connection, bool write);

    /// <summary>Whether <paramref name="exception"/> says the database itself is gone (the connection, the server), not that a statement was refused.</summary>
    protected virtual bool IsConnectionLost(Exception exception) => false;

    /// <summary>Drops idle pooled connections (after one was found closed by the server).</summary>
    protected virtual void ForgetConnections()
    {
    }

    /// <summary>The one line a lost database is reported with: the database's name and the failure, never a password.</summary>
    protected virtual string DescribeLoss(Exception exception) => $"the state database {Name} was lost: {exception.Message}";

    private void ThrowIfLost()
    {
        if (LostReason is { } reason)
        {
            throw new StateUnavailableException(reason);
        }
    }

    private StateUnavailableException Lose(Exception exception)
    {
        string reason = DescribeLoss(exception);
        bool first;
        lock (_lossGate)
        {
            first = LostReason is null;
            LostReason ??= reason;
        }
        if (first)
        {
            Lost?.Invoke(reason);
        }
        return new StateUnavailableException(LostReason, exception);
    }

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
