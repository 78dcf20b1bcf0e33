using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Coordinator.State;

/// <summary>
/// The coordinator's durable state: one store per area over one database. Every write is a unit of work that commits
/// the audit entries describing it in the same transaction before it returns, so nothing is acknowledged unwritten.
/// </summary>
public sealed class CoordinatorState : IDisposable
{
    internal const string DefaultPopulation = "default";

    private CoordinatorState(StateDatabase database)
    {
        Database = database;
        Clients = new ClientStore(database);
        Budgets = new BudgetStore(database);
        Ledger = new LedgerStore(database);
        Runs = new RunStore(database, Budgets);
        AdapterRecords = new AdapterRecordStore(database);
        Rounds = new RoundStore(database, Runs, Ledger, AdapterRecords, Clients);
        Audit = new AuditStore(database);
        Retention = new RetentionStore(database);
    }

    /// <summary>Where units of work come from, for writes that span stores (a run's start with its first adapter).</summary>
    internal StateDatabase Database { get; }

    internal ClientStore Clients { get; }

    internal BudgetStore Budgets { get; }

    internal LedgerStore Ledger { get; }

    internal RunStore Runs { get; }

    /// <summary>Rounds and their participants.</summary>
    public RoundStore Rounds { get; }

    /// <summary>The rows of stored adapters (the bytes are the adapter store's files).</summary>
    internal AdapterRecordStore AdapterRecords { get; }

    internal AuditStore Audit { get; }

    internal RetentionStore Retention { get; }

    internal int SchemaVersion => Database.SchemaVersion;

    /// <summary>Opens (creating and migrating if needed) the SQLite state at <paramref name="path"/>; <paramref name="signer"/>'s key signs the audit head.</summary>
    internal static CoordinatorState Open(string path, X509Certificate2 signer, TimeProvider time)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(signer);
        ArgumentNullException.ThrowIfNull(time);
        ECDsa signingKey = signer.GetECDsaPrivateKey()
            ?? throw new ArgumentException("the audit signer certificate must carry its ECDSA private key", nameof(signer));
        var audit = new AuditWriter(signingKey, signer.ExportCertificatePem());
        try
        {
            return new CoordinatorState(SqliteStateDatabase.Open(path, audit, time));
        }
        catch
        {
            audit.Dispose();
            throw;
        }
    }

    public void Dispose() => Database.Dispose();
}
