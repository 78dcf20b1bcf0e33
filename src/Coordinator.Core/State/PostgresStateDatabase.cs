using System.Data.Common;
using System.Globalization;
using System.Net.Sockets;
using Npgsql;

namespace Federated.Coordinator.State;

/// <summary>
/// The shared backend: a PostgreSQL database through a pooled <see cref="NpgsqlDataSource"/>. Reads use pooled
/// connections concurrently; writes are serialized in this process by a lock (the stores' read-modify-write runs inside
/// each transaction) and run with synchronous_commit on, so a commit is on the server's disk before it is acknowledged.
/// Migrations are counted in the one row of state_schema and applied under an advisory lock, so coordinators starting
/// at once never race. Everything PostgreSQL-specific about the state lives in this class.
/// </summary>
internal sealed class PostgresStateDatabase : StateDatabase
{
    // pg_advisory_xact_lock key of the migrations: "FEDSTATE" in ASCII.
    private const long MigrationLockKey = 0x4645_4453_5441_5445;

    private readonly NpgsqlDataSource _dataSource;
    private readonly StateLocation _location;
    private readonly Lock _writeGate = new();

    private PostgresStateDatabase(NpgsqlDataSource dataSource, StateLocation location, AuditWriter audit, TimeProvider time)
        : base(audit, time)
    {
        _dataSource = dataSource;
        _location = location;
    }

    /// <summary>Connects to and migrates the database; the returned database owns <paramref name="audit"/>.</summary>
    /// <exception cref="StateUnavailableException">The server cannot be reached, or refuses the login or the database.</exception>
    public static PostgresStateDatabase Open(StateLocation location, AuditWriter audit, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(location);
        ArgumentNullException.ThrowIfNull(audit);
        ArgumentNullException.ThrowIfNull(time);
        if (location.Backend != StateBackend.Postgres)
        {
            throw new ArgumentException($"'{location}' is not a PostgreSQL location", nameof(location));
        }
        NpgsqlDataSource dataSource = CreateDataSource(location, readOnly: false);
        try
        {
            using (NpgsqlConnection connection = OpenConnection(dataSource, location))
            {
                Migrate(connection);
            }
            return new PostgresStateDatabase(dataSource, location, audit, time);
        }
        catch
        {
            dataSource.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens one read-only connection (for verification tools and state copy's source): every transaction on it is
    /// READ ONLY, so nothing can be written through it.
    /// </summary>
    /// <exception cref="StateUnavailableException">The server cannot be reached, or refuses the login or the database.</exception>
    public static NpgsqlConnection OpenReadOnly(StateLocation location)
    {
        ArgumentNullException.ThrowIfNull(location);
        using NpgsqlDataSource dataSource = CreateDataSource(location, readOnly: true, pooling: false);
        return OpenConnection(dataSource, location);
    }

    /// <summary>
    /// Connects to and migrates the database as a bare connection with synchronous_commit on, for state copy's
    /// destination: the same schema as <see cref="Open"/>, without the stores.
    /// </summary>
    /// <exception cref="StateUnavailableException">The server cannot be reached, or refuses the login or the database.</exception>
    public static NpgsqlConnection OpenMigrated(StateLocation location)
    {
        ArgumentNullException.ThrowIfNull(location);
        using NpgsqlDataSource dataSource = CreateDataSource(location, readOnly: false, pooling: false);
        NpgsqlConnection connection = OpenConnection(dataSource, location);
        try
        {
            Migrate(connection);
            using NpgsqlCommand command = new("SET synchronous_commit = on", connection);
            command.ExecuteNonQuery();
            return connection;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>The schema version recorded in <paramref name="connection"/>'s database; 0 where no state was ever created.</summary>
    public static int ReadVersion(NpgsqlConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        using NpgsqlCommand exists = new("SELECT to_regclass('state_schema') IS NOT NULL", connection);
        if (!(bool)exists.ExecuteScalar()!)
        {
            return 0;
        }
        using NpgsqlCommand command = new("SELECT version FROM state_schema WHERE id = 1", connection);
        return command.ExecuteScalar() is { } version and not DBNull ? Convert.ToInt32(version, CultureInfo.InvariantCulture) : 0;
    }

    public override string Name => _location.Display;

    public override int SchemaVersion => Read(session => session.Scalar<int>("SELECT version FROM state_schema WHERE id = 1"));

    /// <summary>One line for a connection that failed: the server (host and port, never the password) and why.</summary>
    internal static string Describe(StateLocation location, Exception exception)
    {
        if (exception is StateConnectionException { InnerException: { } inner })
        {
            exception = inner;
        }
        string why = exception switch
        {
            PostgresException pg => $"{pg.MessageText} ({pg.SqlState})",
            NpgsqlException { InnerException: SocketException socket } => socket.Message,
            NpgsqlException { InnerException: TimeoutException } => "timed out",
            NpgsqlException { InnerException: IOException io } => io.Message,
            _ => exception.Message,
        };
        return location.Redact(why.TrimEnd('.'));
    }

    internal static bool IsConnectionFailure(Exception exception) => exception switch
    {
        StateConnectionException => true,
        // Class 08: connection exceptions; 57P01-57P03: the server is shutting down or starting; 3D000: the database
        // was dropped; 53300: no connection slot. Every other server error is a refusal of one statement.
        PostgresException pg => pg.SqlState.StartsWith("08", StringComparison.Ordinal)
            || pg.SqlState is PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow
                or PostgresErrorCodes.InvalidCatalogName or PostgresErrorCodes.TooManyConnections,
        // Not a server error: the socket, TLS or a timeout failed, or the connection was broken.
        NpgsqlException => true,
        InvalidOperationException when exception.InnerException is NpgsqlException => true,
        _ => false,
    };

    protected override DbConnection Enter(bool write)
    {
        if (!write)
        {
            return Connect();
        }
        _writeGate.Enter();
        try
        {
            NpgsqlConnection connection = OpenForWrite();
            return connection;
        }
        catch
        {
            _writeGate.Exit();
            throw;
        }
    }

    protected override void Exit(DbConnection connection, bool write)
    {
        try
        {
            connection.Dispose();
        }
        finally
        {
            if (write)
            {
                _writeGate.Exit();
            }
        }
    }

    protected override bool IsConnectionLost(Exception exception) => IsConnectionFailure(exception);

    protected override void ForgetConnections() => _dataSource.Clear();

    protected override string DescribeLoss(Exception exception) =>
        $"lost the PostgreSQL state database at {_location.Host}:{_location.Port.ToString(CultureInfo.InvariantCulture)} ({_location.Display}): {Describe(_location, exception)}";

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _dataSource.Dispose();
        }
        base.Dispose(disposing);
    }

    // synchronous_commit is set on the connection of every write, explicitly (pooled connections are reset to the
    // server's default when handed back, and a server or role may default it off). A pooled connection the server
    // closed fails here, before anything is written, and is replaced once.
    private NpgsqlConnection OpenForWrite()
    {
        for (int attempt = 1; ; attempt++)
        {
            NpgsqlConnection connection = Connect();
            try
            {
                using NpgsqlCommand command = new("SET synchronous_commit = on", connection);
                command.ExecuteNonQuery();
                return connection;
            }
            catch (Exception ex) when (attempt == 1 && IsConnectionFailure(ex))
            {
                connection.Dispose();
                ForgetConnections();
            }
            catch
            {
                connection.Dispose();
                throw;
            }
        }
    }

    // Any failure to open a connection means the database cannot be used, whatever the server says why (refused,
    // dropped, not accepting connections, a password changed): nothing was sent, so nothing is half-done.
    private NpgsqlConnection Connect()
    {
        try
        {
            return _dataSource.OpenConnection();
        }
        catch (NpgsqlException ex)
        {
            throw new StateConnectionException(ex);
        }
    }

    private static NpgsqlDataSource CreateDataSource(StateLocation location, bool readOnly, bool pooling = true)
    {
        var builder = new NpgsqlConnectionStringBuilder(location.ConnectionString);
        if (!pooling)
        {
            // One connection for one tool run, closed with it.
            builder.Pooling = false;
        }
        if (readOnly)
        {
            // A startup parameter, so that it holds for the whole session, pool resets included.
            builder.Options = ((builder.Options ?? "") + " -c default_transaction_read_only=on").Trim();
        }
        if (string.IsNullOrEmpty(builder.ApplicationName))
        {
            builder.ApplicationName = "federated-coordinator";
        }
        return new NpgsqlDataSourceBuilder(builder.ConnectionString).Build();
    }

    private static NpgsqlConnection OpenConnection(NpgsqlDataSource dataSource, StateLocation location)
    {
        try
        {
            return dataSource.OpenConnection();
        }
        catch (Exception ex) when (ex is NpgsqlException)
        {
            throw new StateUnavailableException(
                $"cannot reach the PostgreSQL state database at {location.Host}:{location.Port.ToString(CultureInfo.InvariantCulture)} ({location.Display}): {Describe(location, ex)}", ex);
        }
    }

    private static void Migrate(NpgsqlConnection connection)
    {
        using NpgsqlTransaction transaction = connection.BeginTransaction();
        Execute(connection, transaction, $"SELECT pg_advisory_xact_lock({MigrationLockKey.ToString(CultureInfo.InvariantCulture)})");
        Execute(connection, transaction, "SET LOCAL synchronous_commit = on");
        Execute(connection, transaction, "CREATE TABLE IF NOT EXISTS state_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)");
        Execute(connection, transaction, "INSERT INTO state_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING");
        int version;
        using (NpgsqlCommand read = new("SELECT version FROM state_schema WHERE id = 1", connection, transaction))
        {
            version = Convert.ToInt32(read.ExecuteScalar(), CultureInfo.InvariantCulture);
        }
        if (version > StateSchema.PostgresMigrations.Length)
        {
            throw new InvalidOperationException(
                $"state schema version {version} is newer than this coordinator supports ({StateSchema.PostgresMigrations.Length}); upgrade the coordinator");
        }
        // PostgreSQL's DDL is transactional: every pending migration and the new version commit together, or none.
        for (int i = version; i < StateSchema.PostgresMigrations.Length; i++)
        {
            Execute(connection, transaction, StateSchema.PostgresMigrations[i]);
        }
        if (version < StateSchema.PostgresMigrations.Length)
        {
            Execute(connection, transaction, $"UPDATE state_schema SET version = {StateSchema.PostgresMigrations.Length.ToString(CultureInfo.InvariantCulture)} WHERE id = 1");
        }
        transaction.Commit();
    }

    private static void Execute(NpgsqlConnection connection, NpgsqlTransaction transaction, string sql)
    {
        using NpgsqlCommand command = new(sql, connection, transaction);
        command.ExecuteNonQuery();
    }
}

/// <summary>A connection to the state database could not be opened (the inner exception says why).</summary>
internal sealed class StateConnectionException(NpgsqlException inner) : Exception("cannot open a connection to the state database", inner);
