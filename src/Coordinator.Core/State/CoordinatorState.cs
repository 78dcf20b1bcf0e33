using System.Data.Common;
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

    private CoordinatorState(StateDatabase database, StateLocation location)
    {
        Database = database;
        Location = location;
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
        return Open(StateLocation.Parse(path), signer, time);
    }

    /// <summary>
    /// Opens (creating and migrating if needed) the state at <paramref name="location"/>: a SQLite file or a PostgreSQL
    /// database; <paramref name="signer"/>'s key signs the audit head.
    /// </summary>
    /// <exception cref="StateUnavailableException">The PostgreSQL server cannot be reached or refuses the login or the database.</exception>
    internal static CoordinatorState Open(StateLocation location, X509Certificate2 signer, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(location);
        ArgumentNullException.ThrowIfNull(signer);
        ArgumentNullException.ThrowIfNull(time);
        ECDsa signingKey = signer.GetECDsaPrivateKey()
            ?? throw new ArgumentException("the audit signer certificate must carry its ECDSA private key", nameof(signer));
        var audit = new AuditWriter(signingKey, signer.ExportCertificatePem());
        try
        {
            StateDatabase database = location.Backend == StateBackend.Postgres
                ? PostgresStateDatabase.Open(location, audit, time)
                : SqliteStateDatabase.Open(location.Path!, audit, time);
            return new CoordinatorState(database, location);
        }
        catch
        {
            audit.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens an existing state for reading only (verification tools, state copy's source): nothing is created, migrated
    /// or written through the connection.
    /// </summary>
    /// <exception cref="FileNotFoundException">The SQLite file does not exist.</exception>
    /// <exception cref="StateUnavailableException">The PostgreSQL server cannot be reached or refuses the login or the database.</exception>
    internal static DbConnection OpenReadOnly(StateLocation location)
    {
        ArgumentNullException.ThrowIfNull(location);
        return location.Backend == StateBackend.Postgres
            ? PostgresStateDatabase.OpenReadOnly(location)
            : SqliteStateDatabase.OpenReadOnly(location.Path!);
    }

    /// <summary>Where this state lives.</summary>
    public StateLocation Location { get; }

    public void Dispose() => Database.Dispose();
}
