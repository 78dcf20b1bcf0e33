using System.Data.Common;
using Federated.Coordinator.Audit;

namespace Federated.Coordinator.State;

/// <summary>Reads the audit chain and its signed head, and appends entries for actions that change nothing else.</summary>
internal sealed class AuditStore(StateDatabase database)
{
    /// <summary>Appends an audit entry in its own unit of work (for actions that change nothing else: an export, a renewal).</summary>
    public AuditRecord Append(string actor, string action, IReadOnlyDictionary<string, string> details) =>
        database.Write(work => work.Audit(actor, action, details));

    /// <summary>Up to <paramref name="limit"/> entries from <paramref name="fromSequence"/> on, with the signed head.</summary>
    public (IReadOnlyList<AuditRecord> Entries, AuditHead? Head) Read(long fromSequence, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(fromSequence, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        return database.Read(session => (Records(session, fromSequence, limit), Head(session)));
    }

    /// <summary>The chain read straight from a connection (for `audit verify`, which opens the file read-only).</summary>
    public static IReadOnlyList<AuditRecord> ReadRecords(DbConnection connection, long fromSequence = 1, int limit = int.MaxValue) =>
        Records(new StateSession(connection, transaction: null, default), fromSequence, limit);

    /// <summary>The signed head read straight from a connection; null for an empty chain.</summary>
    public static AuditHead? ReadHead(DbConnection connection) => Head(new StateSession(connection, transaction: null, default));

    private static List<AuditRecord> Records(StateSession session, long fromSequence, int limit) =>
        session.Query("SELECT sequence, canonical_json, hash FROM audit WHERE sequence >= @from ORDER BY sequence LIMIT @limit",
            r => new AuditRecord(r.Long(0), r.Text(1), r.Text(2)), ("@from", fromSequence), ("@limit", limit));

    private static AuditHead? Head(StateSession session) =>
        session.Query("SELECT sequence, hash, signature, signer FROM audit_head WHERE id = 1",
            r => new AuditHead(r.Long(0), r.Text(1), r.Blob(2), r.Text(3))).SingleOrDefault();
}
