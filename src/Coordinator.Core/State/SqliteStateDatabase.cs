using System.Data.Common;
using System.Globalization;
using Microsoft.Data.Sqlite;

namespace Federated.Coordinator.State;

/// <summary>
/// The embedded backend: one SQLite file in WAL mode with synchronous=FULL, one connection serialized by a lock, and
/// migrations counted by PRAGMA user_version. Everything SQLite-specific about the state lives in this class.
/// </summary>
internal sealed class SqliteStateDatabase : StateDatabase
{
    private readonly SqliteConnection _connection;
    private readonly Lock _gate = new();
    private readonly string _path;

    private SqliteStateDatabase(SqliteConnection connection, string path, AuditWriter audit, TimeProvider time)
        : base(audit, time)
    {
        _connection = connection;
        _path = path;
    }

    /// <summary>Opens (creating if needed) and migrates the database; the returned database owns <paramref name="audit"/>.</summary>
    public static SqliteStateDatabase Open(string path, AuditWriter audit, TimeProvider time)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(audit);
        ArgumentNullException.ThrowIfNull(time);
        SqliteConnection connection = OpenMigrated(path);
        return new SqliteStateDatabase(connection, Path.GetFullPath(path), audit, time);
    }

    /// <summary>
    /// Opens (creating if needed) and migrates the database as a bare connection, for state copy's destination: the same
    /// settings and schema as <see cref="Open"/>, without the stores.
    /// </summary>
    public static SqliteConnection OpenMigrated(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
        }.ToString());
        connection.Open();
        try
        {
            Execute(connection, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
            Migrate(connection);
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>The schema version of a SQLite state (PRAGMA user_version).</summary>
    public static int ReadVersion(SqliteConnection connection) => ReadUserVersion(connection);

    /// <summary>Opens an existing database read-only (for verification tools); nothing is migrated or written.</summary>
    public static SqliteConnection OpenReadOnly(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"state file '{path}' does not exist");
        }
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadOnly,
            Pooling = false,
        }.ToString());
        connection.Open();
        return connection;
    }

    public override int SchemaVersion
    {
        get
        {
            lock (_gate)
            {
                return ReadUserVersion(_connection);
            }
        }
    }

    public override string Name => _path;

    // One connection for reads and writes alike: SQLite serializes them anyway.
    protected override DbConnection Enter(bool write)
    {
        _gate.Enter();
        return _connection;
    }

    protected override void Exit(DbConnection connection, bool write) => _gate.Exit();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _connection.Dispose();
        }
        base.Dispose(disposing);
    }

    private static void Migrate(SqliteConnection connection)
    {
        int version = ReadUserVersion(connection);
        if (version > StateSchema.Migrations.Length)
        {
            throw new InvalidOperationException(
                $"state schema version {version} is newer than this coordinator supports ({StateSchema.Migrations.Length}); upgrade the coordinator");
        }
        for (int i = version; i < StateSchema.Migrations.Length; i++)
        {
            using SqliteTransaction transaction = connection.BeginTransaction();
            foreach (string sql in new[] { StateSchema.Migrations[i], $"PRAGMA user_version = {i + 1}" })
            {
                using SqliteCommand command = connection.CreateCommand();
                command.Transaction = transaction;
                command.CommandText = sql;
                command.ExecuteNonQuery();
            }
            transaction.Commit();
        }
    }

    private static int ReadUserVersion(SqliteConnection connection)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "PRAGMA user_version";
        return Convert.ToInt32(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
