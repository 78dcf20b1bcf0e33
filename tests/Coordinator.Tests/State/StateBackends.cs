using System.Data.Common;
using System.Globalization;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.State;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Federated.Coordinator.Tests.State;

/// <summary>The backends every state test runs on: [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))].</summary>
public static class StateBackends
{
    public static TheoryData<StateBackend> All => new() { StateBackend.Sqlite, StateBackend.Postgres };
}

/// <summary>
/// An empty state location on one backend for one test: a file in a temporary folder, or a fresh database on the real
/// PostgreSQL server of <see cref="PostgresServer"/> (dropped at the end). Raw SQL runs on a connection of its own, the
/// way another process (or an attacker with database access) would change the state.
/// </summary>
internal sealed class TestStateDatabase : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly string? _postgres;

    public TestStateDatabase(StateBackend backend)
    {
        Backend = backend;
        if (backend == StateBackend.Postgres)
        {
            _postgres = PostgresServer.Shared.CreateDatabase();
            Location = StateLocation.Parse(_postgres);
        }
        else
        {
            Location = StateLocation.Parse(_dir.File("state.db"));
        }
    }

    public StateBackend Backend { get; }

    public StateLocation Location { get; }

    /// <summary>The test's temporary folder (the SQLite file's, and any other file the test needs).</summary>
    public TempDirectory Folder => _dir;

    /// <summary>The connection string or path <c>--state</c> takes for this database.</summary>
    public string Argument => _postgres ?? Location.Path!;

    public CoordinatorState Open(X509Certificate2 signer, TimeProvider? time = null) =>
        CoordinatorState.Open(Location, signer, time ?? TimeProvider.System);

    /// <summary>A new connection of its own (not pooled).</summary>
    public DbConnection Connect()
    {
        DbConnection connection = _postgres is null
            ? new SqliteConnection($"Data Source={Location.Path};Pooling=False")
            : new NpgsqlConnection(new NpgsqlConnectionStringBuilder(_postgres) { Pooling = false }.ConnectionString);
        connection.Open();
        return connection;
    }

    public int Execute(string sql, params (string Name, object Value)[] parameters)
    {
        using DbConnection connection = Connect();
        using DbCommand command = Command(connection, sql, parameters);
        return command.ExecuteNonQuery();
    }

    public T Scalar<T>(string sql, params (string Name, object Value)[] parameters)
    {
        using DbConnection connection = Connect();
        using DbCommand command = Command(connection, sql, parameters);
        object value = command.ExecuteScalar()!;
        return value is T typed ? typed : (T)Convert.ChangeType(value, typeof(T), CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Makes every INSERT into the audit table fail (where its JSON names <paramref name="action"/>, when given), the way
    /// a full disk or a constraint would; <paramref name="refuse"/> false removes the trigger.
    /// </summary>
    public void RefuseAuditInserts(bool refuse, string? action = null)
    {
        string when = action is null ? "" : $"NEW.canonical_json LIKE '%\"action\":\"{action}\"%'";
        if (_postgres is null)
        {
            Execute(refuse
                ? "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit " + (when.Length == 0 ? "" : $"WHEN {when} ") + "BEGIN SELECT RAISE(ABORT, 'audit refused'); END;"
                : "DROP TRIGGER refuse_audit;");
            return;
        }
        Execute(refuse
            ? "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$;"
                + "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit FOR EACH ROW " + (when.Length == 0 ? "" : $"WHEN ({when}) ") + "EXECUTE FUNCTION refuse_audit();"
            : "DROP TRIGGER refuse_audit ON audit; DROP FUNCTION refuse_audit();");
    }

    /// <summary>The adapter store this backend uses (files beside SQLite, rows on PostgreSQL).</summary>
    public static Federated.Coordinator.Rounds.AdapterStore Adapters(CoordinatorState state, Federated.Coordinator.Rounds.AdapterSigner signer, Federated.Coordinator.Storage.AtRestCipher? cipher = null) =>
        Federated.Coordinator.Rounds.AdapterStore.For(state, signer, cipher);

    /// <summary>The names of the stored adapters' bytes (file names, or adapter_blobs rows), in order.</summary>
    public IReadOnlyList<string> StoredAdapterNames()
    {
        if (_postgres is null)
        {
            string folder = Location.AdapterDirectory!;
            return Directory.Exists(folder) ? [.. System.IO.Directory.GetFiles(folder).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal)] : [];
        }
        using DbConnection connection = Connect();
        using DbCommand command = Command(connection, "SELECT name FROM adapter_blobs ORDER BY name", []);
        using DbDataReader reader = command.ExecuteReader();
        var names = new List<string>();
        while (reader.Read())
        {
            names.Add(reader.GetString(0));
        }
        return names;
    }

    public bool StoredAdapterExists(string name) => StoredAdapterNames().Contains(name);

    public byte[] ReadStoredAdapter(string name) => _postgres is null
        ? File.ReadAllBytes(Path.Combine(Location.AdapterDirectory!, name))
        : Scalar<byte[]>("SELECT content FROM adapter_blobs WHERE name = @n", ("@n", name));

    /// <summary>Overwrites (or creates) stored bytes behind the coordinator's back, as a disk fault or an attacker would.</summary>
    public void WriteStoredAdapter(string name, byte[] content)
    {
        if (_postgres is null)
        {
            File.WriteAllBytes(Path.Combine(Location.AdapterDirectory!, name), content);
            return;
        }
        Execute("INSERT INTO adapter_blobs (name, content) VALUES (@n, @c) ON CONFLICT (name) DO UPDATE SET content = @c", ("@n", name), ("@c", content));
    }

    /// <summary>The exception type a statement the database refuses (a constraint, a trigger) surfaces as.</summary>
    public Type RefusalException => _postgres is null ? typeof(SqliteException) : typeof(PostgresException);

    public void Dispose()
    {
        _dir.Dispose();
        if (_postgres is not null)
        {
            PostgresServer.Shared.DropDatabase(_postgres);
        }
    }

    private static DbCommand Command(DbConnection connection, string sql, (string Name, object Value)[] parameters)
    {
        DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        foreach ((string name, object value) in parameters)
        {
            DbParameter parameter = command.CreateParameter();
            parameter.ParameterName = name;
            parameter.Value = value;
            command.Parameters.Add(parameter);
        }
        return command;
    }
}
