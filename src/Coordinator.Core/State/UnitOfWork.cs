using System.Data.Common;
using Federated.Coordinator.Audit;

namespace Federated.Coordinator.State;

/// <summary>
/// One write transaction of the coordinator's state. Every store write runs inside one, together with the audit entries
/// it appends, and they commit or roll back as a whole; <see cref="StateDatabase.Write{T}"/> is the only way to get one.
/// </summary>
internal sealed class UnitOfWork : StateSession
{
    private readonly AuditWriter _audit;

    internal UnitOfWork(DbConnection connection, DbTransaction transaction, DateTimeOffset now, AuditWriter audit)
        : base(connection, transaction, now)
    {
        _audit = audit;
    }

    /// <summary>Appends an audit entry in this transaction: it commits with the writes it describes, or not at all.</summary>
    public AuditRecord Audit(string actor, string action, IReadOnlyDictionary<string, string> details) =>
        _audit.Append(this, actor, action, details);
}
