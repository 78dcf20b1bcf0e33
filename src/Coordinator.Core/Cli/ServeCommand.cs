using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using Federated.Coordinator.State;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Runs the coordinator: mutual-TLS gRPC for edge clients and the admin CLI, state in SQLite or PostgreSQL.</summary>
internal sealed class ServeCommand : AsyncCommand<ServeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--pki <DIR>")]
        [Description("The PKI folder pki init wrote (ca.crt, server.pfx, adapter-signer.pfx; crl.pem once pki revoke ran). Required, here or as Coordinator:Pki in appsettings.json.")]
        public string? Pki { get; init; }

        [CommandOption("--port <N>")]
        [Description("TCP port of the mutual-TLS gRPC endpoint (default: 7443).")]
        public int? Port { get; init; }

        [CommandOption("--state <FILE|CONNECTION>")]
        [Description("Where the state lives (runs, rounds, ledger, budgets, audit trail): a SQLite file, created when missing, with adapters in the adapters folder beside it; or a PostgreSQL database as 'Host=...;Database=...' or postgresql://user@host:port/db, adapters stored in it (default: coordinator.db in the current folder).")]
        public string? State { get; init; }

        [CommandOption("--address <IP>")]
        [Description("Address to listen on: 0.0.0.0 or a host address serves edge clients on other machines (default: 127.0.0.1, this machine only).")]
        public string? Address { get; init; }

        [CommandOption("--at-rest-key <FILE>")]
        [Description("Encrypt stored adapters with AES-256-GCM under this key file (pki init writes at-rest.key) (default: none, stored in plaintext).")]
        public string? AtRestKey { get; init; }

        [CommandOption("--metrics-port <N>")]
        [Description("Serve Prometheus metrics over plain HTTP at /metrics on this port (default: none).")]
        public int? MetricsPort { get; init; }

        [CommandOption("--metrics-address <IP>")]
        [Description("Address of the metrics endpoint (default: 127.0.0.1, this machine only).")]
        public string? MetricsAddress { get; init; }

        [CommandOption("--retention-days <N>")]
        [Description("Delete finished rounds' adapters and participant rows after N days; the audit chain keeps their hashes (default: 0, keep them).")]
        public int? RetentionDays { get; init; }

        [CommandOption("--seconds-per-step <S>")]
        [Description("Seconds of local training allowed per local step, added to each round's first deadline (default: 1).")]
        public double? SecondsPerStep { get; init; }

        [CommandOption("--lease-seconds <S>")]
        [Description("With a PostgreSQL --state shared by several coordinators: seconds the leader lease lasts after each renewal; a standby takes over within about this plus one second of the leader dying (default: 8, allowed 2..300).")]
        public double? LeaseSeconds { get; init; }

        [CommandOption("--advertise <URL>")]
        [Description("With a shared PostgreSQL --state: the https://HOST:PORT clients reach this coordinator at, named by standbys while it leads (default: the bound address).")]
        public string? Advertise { get; init; }

        [CommandOption("--json")]
        [Description("One JSON object per line on stdout when listening and when stopping; log lines go to stderr.")]
        public bool Json { get; init; }
    }

    /// <summary>How long a deposed leader waits for its host to stop before it exits anyway.</summary>
    private static readonly TimeSpan DeposedStopTimeout = TimeSpan.FromSeconds(5);

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        CoordinatorOptions options = Resolve(settings, Directory.GetCurrentDirectory());
        try
        {
            options.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter")[0].ReplaceLineEndings(" "));
        }
        // A port in use is one line, found before the state file is created or opened: nothing is left behind.
        RequirePortFree(options);
        StateLocation location = options.StateLocation;
        // A PostgreSQL database is the operator's to create and drop: only a SQLite file this start created goes again.
        bool stateExisted = location.Backend == StateBackend.Postgres || File.Exists(location.Path);
        CoordinatorHost host;
        try
        {
            // With --json, stdout carries only the JSON lines: every log line goes to stderr.
            host = settings.Json
                ? CoordinatorHost.Create(options, logging => logging
                    .AddSimpleConsole(o => o.SingleLine = true)
                    .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace))
                : CoordinatorHost.Create(options);
        }
        catch (Microsoft.Data.Sqlite.SqliteException ex)
        {
            // An unreadable state file is one line naming the file and the flag; a file this start created goes again.
            if (!stateExisted)
            {
                DeleteState(location.Path!);
            }
            throw StateFileError.Describe(location.Path!, ex, "names a coordinator state file in a writable folder");
        }
        catch (StateUnavailableException ex)
        {
            // One line naming the server (host and port, never the password): exit 1, and systemd's Restart= retries.
            throw new InvalidOperationException(ex.Message, ex);
        }
        catch (Npgsql.PostgresException ex)
        {
            // Reachable, but the role may not create or read the state's tables, say.
            throw new InvalidOperationException(
                $"cannot use the PostgreSQL state database at {location.Host}:{location.Port} ({location.Display}): {location.Redact(ex.MessageText)} ({ex.SqlState}); check --state and the role's privileges", ex);
        }
        try
        {
            await host.StartAsync(cancellationToken);
        }
        catch (IOException ex) when (ex.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            // Taken between the check and the bind: the same line, and the state file this start created goes too.
            await host.DisposeAsync();
            if (!stateExisted)
            {
                DeleteState(location.Path!);
            }
            throw new InvalidOperationException(PortInUse(options), ex);
        }
        string? stateLost;
        bool disposed = false;
        try
        {
            Uri address = host.Address;
            if (settings.Json)
            {
                WriteJson(new { @event = "listening", address = address.ToString(), port = address.Port, state = location.Display });
            }
            await host.WaitForShutdownAsync(cancellationToken);
            if (host.LeadershipLost is { } lost)
            {
                // Deposed: nothing more it writes can commit, so it stops now rather than drain calls for the full
                // shutdown timeout; the service manager restarts it, as a standby.
                if (settings.Json)
                {
                    WriteJson(new { @event = "deposed", address = address.ToString(), port = address.Port, reason = lost });
                }
                disposed = true;
                await Task.WhenAny(host.DisposeAsync().AsTask(), Task.Delay(DeposedStopTimeout, CancellationToken.None));
                throw new InvalidOperationException($"lost the leader lease: {lost}; stopped serving (a restart stands by)");
            }
            stateLost = host.StateLostReason;
            if (settings.Json)
            {
                WriteJson(new { @event = "stopping", address = address.ToString(), port = address.Port });
            }
        }
        finally
        {
            if (!disposed)
            {
                await host.DisposeAsync();
            }
        }
        if (settings.Json)
        {
            WriteJson(new { @event = "stopped" });
        }
        if (stateLost is not null)
        {
            // Stopped because the state database was lost: one line and a failing exit, so the service manager restarts it.
            throw new InvalidOperationException(stateLost);
        }
        return CliRunner.Ok;
    }

    private static void DeleteState(string state)
    {
        foreach (string suffix in new[] { "", "-wal", "-shm" })
        {
            if (File.Exists(state + suffix))
            {
                File.Delete(state + suffix);
            }
        }
    }

    private static void WriteJson(object line)
    {
        Console.Out.WriteLine(JsonSerializer.Serialize(line));
        Console.Out.Flush();
    }

    private static void RequirePortFree(CoordinatorOptions options)
    {
        Probe(options.Address, options.Port, PortInUse(options));
        if (options.MetricsPort is { } metrics)
        {
            Probe(options.MetricsAddress, metrics, $"metrics port {metrics} on {options.MetricsAddress} is in use; stop what holds it or choose another --metrics-port");
        }
    }

    private static void Probe(string address, int port, string inUse)
    {
        if (port == 0)
        {
            return;
        }
        try
        {
            using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Parse(address), port);
            probe.Start();
            probe.Stop();
        }
        catch (System.Net.Sockets.SocketException ex) when (ex.SocketErrorCode == System.Net.Sockets.SocketError.AddressAlreadyInUse)
        {
            throw new InvalidOperationException(inUse, ex);
        }
    }

    private static string PortInUse(CoordinatorOptions options) =>
        $"port {options.Port} on {options.Address} is in use (another coordinator?); stop it or choose another --port";

    /// <summary>Settings precedence: appsettings.json, then FEDERATED_-prefixed environment variables, then flags.</summary>
    internal static CoordinatorOptions Resolve(Settings settings, string baseDirectory)
    {
        var overrides = new Dictionary<string, string?>();
        if (settings.Pki is not null)
        {
            overrides[$"{CoordinatorOptions.Section}:Pki"] = settings.Pki;
        }
        if (settings.Port is { } port)
        {
            overrides[$"{CoordinatorOptions.Section}:Port"] = port.ToString(CultureInfo.InvariantCulture);
        }
        if (settings.State is not null)
        {
            overrides[$"{CoordinatorOptions.Section}:State"] = settings.State;
        }
        if (settings.Address is not null)
        {
            overrides[$"{CoordinatorOptions.Section}:Address"] = settings.Address;
        }
        if (settings.AtRestKey is not null)
        {
            overrides[$"{CoordinatorOptions.Section}:AtRestKey"] = settings.AtRestKey;
        }
        if (settings.MetricsPort is { } metricsPort)
        {
            overrides[$"{CoordinatorOptions.Section}:MetricsPort"] = metricsPort.ToString(CultureInfo.InvariantCulture);
        }
        if (settings.MetricsAddress is not null)
        {
            overrides[$"{CoordinatorOptions.Section}:MetricsAddress"] = settings.MetricsAddress;
        }
        if (settings.SecondsPerStep is { } perStep)
        {
            overrides[$"{CoordinatorOptions.Section}:TrainingSecondsPerStep"] = perStep.ToString("R", CultureInfo.InvariantCulture);
        }
        if (settings.LeaseSeconds is { } lease)
        {
            overrides[$"{CoordinatorOptions.Section}:LeaseSeconds"] = lease.ToString("R", CultureInfo.InvariantCulture);
        }
        if (settings.Advertise is not null)
        {
            overrides[$"{CoordinatorOptions.Section}:AdvertisedAddress"] = settings.Advertise;
        }
        if (settings.RetentionDays is { } days)
        {
            overrides[$"{CoordinatorOptions.Section}:RetentionDays"] = days.ToString(CultureInfo.InvariantCulture);
        }
        IConfigurationRoot configuration = new ConfigurationBuilder()
            .SetBasePath(baseDirectory)
            .AddJsonFile("appsettings.json", optional: true)
            .AddEnvironmentVariables("FEDERATED_")
            .AddInMemoryCollection(overrides)
            .Build();
        var options = new CoordinatorOptions();
        try
        {
            configuration.GetSection(CoordinatorOptions.Section).Bind(options);
        }
        catch (InvalidOperationException ex)
        {
            throw new UsageException($"invalid coordinator setting: {ex.Message}");
        }
        return options;
    }
}
