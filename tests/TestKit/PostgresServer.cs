using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace Federated.TestKit;

/// <summary>
/// A real PostgreSQL server for the tests: the one `.ci/run` started (its connection string in
/// <c>FEDERATED_TEST_POSTGRES</c>, a role that may create databases), or else a throwaway cluster this process starts
/// itself with Debian's <c>initdb</c> and <c>pg_ctl</c> in a temporary folder on loopback and stops at exit. Each test
/// takes its own empty database from <see cref="CreateDatabase"/>. Nothing is mocked: without PostgreSQL the tests fail
/// with a line saying what to install.
/// </summary>
public sealed class PostgresServer
{
    public const string EnvironmentVariable = "FEDERATED_TEST_POSTGRES";

    private static readonly Lazy<PostgresServer> SharedServer = new(Start, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly string _adminConnectionString;

    private PostgresServer(string adminConnectionString, string host, int port)
    {
        _adminConnectionString = adminConnectionString;
        Host = host;
        Port = port;
    }

    /// <summary>The server every test of this process shares.</summary>
    public static PostgresServer Shared => SharedServer.Value;

    public string Host { get; }

    public int Port { get; }

    /// <summary>The administrative connection string (database <c>postgres</c>).</summary>
    public string AdminConnectionString => _adminConnectionString;

    /// <summary>Creates an empty database with a unique name and returns a connection string for it.</summary>
    public string CreateDatabase()
    {
        string name = "federated_" + Guid.NewGuid().ToString("N")[..16];
        using var connection = new Npgsql.NpgsqlConnection(_adminConnectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = $"CREATE DATABASE {name}";
        command.ExecuteNonQuery();
        var builder = new Npgsql.NpgsqlConnectionStringBuilder(_adminConnectionString) { Database = name };
        return builder.ConnectionString;
    }

    /// <summary>Drops a database <see cref="CreateDatabase"/> made, closing whatever is still connected to it.</summary>
    public void DropDatabase(string connectionString)
    {
        string name = new Npgsql.NpgsqlConnectionStringBuilder(connectionString).Database
            ?? throw new ArgumentException("the connection string names no database", nameof(connectionString));
        if (!name.StartsWith("federated_", StringComparison.Ordinal) || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
        {
            throw new ArgumentException($"'{name}' is not a database CreateDatabase made", nameof(connectionString));
        }
        using var connection = new Npgsql.NpgsqlConnection(_adminConnectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = $"DROP DATABASE IF EXISTS {name} WITH (FORCE)";
        command.ExecuteNonQuery();
    }

    private static PostgresServer Start()
    {
        string? given = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(given))
        {
            var builder = new Npgsql.NpgsqlConnectionStringBuilder(given);
            return new PostgresServer(given, builder.Host ?? "127.0.0.1", builder.Port);
        }
        return StartThrowawayCluster();
    }

    private static PostgresServer StartThrowawayCluster()
    {
        string bin = FindBinaries();
        string root = Path.Combine(Path.GetTempPath(), "federated-pg-" + Guid.NewGuid().ToString("N")[..12]);
        string data = Path.Combine(root, "data");
        Directory.CreateDirectory(root);
        string password = Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
        string passwordFile = Path.Combine(root, "pwfile");
        File.WriteAllText(passwordFile, password + "\n");
        // initdb refuses to run as root: run the cluster as Debian's postgres account then.
        bool asRoot = Environment.UserName == "root";
        if (asRoot)
        {
            RunTool("chown", ["-R", "postgres:postgres", root], runAs: null);
        }
        string? runAs = asRoot ? "postgres" : null;
        RunTool(Path.Combine(bin, "initdb"), ["-D", data, "-U", "federated", "--auth=scram-sha-256", "--pwfile=" + passwordFile, "-E", "UTF8", "--no-sync"], runAs);
        int port = FreePort();
        string options = string.Create(CultureInfo.InvariantCulture,
            $"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off -c max_connections=300");
        RunTool(Path.Combine(bin, "pg_ctl"), ["-D", data, "-o", options, "-l", Path.Combine(root, "log"), "-w", "-t", "60", "start"], runAs);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                RunTool(Path.Combine(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"], runAs);
                Directory.Delete(root, recursive: true);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException or UnauthorizedAccessException)
            {
                // Best effort at exit; the temporary folder is the OS's to clean.
            }
        };
        string connectionString = new Npgsql.NpgsqlConnectionStringBuilder
        {
            Host = "127.0.0.1",
            Port = port,
            Username = "federated",
            Password = password,
            Database = "postgres",
        }.ConnectionString;
        return new PostgresServer(connectionString, "127.0.0.1", port);
    }

    private static string FindBinaries()
    {
        const string Debian = "/usr/lib/postgresql";
        if (Directory.Exists(Debian))
        {
            string? newest = Directory.GetDirectories(Debian)
                .Select(d => Path.Combine(d, "bin"))
                .Where(b => File.Exists(Path.Combine(b, "initdb")))
                .OrderByDescending(b => int.TryParse(Path.GetFileName(Path.GetDirectoryName(b)), out int v) ? v : 0)
                .FirstOrDefault();
            if (newest is not null)
            {
                return newest;
            }
        }
        throw new InvalidOperationException(
            $"no PostgreSQL server found under {Debian}: install Debian's postgresql package (bash .ci/run does) or set {EnvironmentVariable} to a connection string whose role may create databases");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static void RunTool(string tool, IReadOnlyList<string> arguments, string? runAs)
    {
        var info = new ProcessStartInfo(runAs is null ? tool : "runuser")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (runAs is not null)
        {
            foreach (string a in new[] { "-u", runAs, "--", tool })
            {
                info.ArgumentList.Add(a);
            }
        }
        foreach (string a in arguments)
        {
            info.ArgumentList.Add(a);
        }
        using Process process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {tool}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{Path.GetFileName(tool)} did not finish within 2 minutes");
        }
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{Path.GetFileName(tool)} {string.Join(' ', arguments)} exited with {process.ExitCode}: {stdout.Result}{stderr.Result}");
        }
    }
}
