using System.ComponentModel;
using System.Net;
using Federated.Coordinator.Dashboard;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Engineer or officer: a local web page that shows a federation live (runs, rounds, epsilon, clients, budgets, the
/// audit tail) as read over the admin API with the given identity. Listens on 127.0.0.1 unless --address says otherwise.
/// </summary>
internal sealed class DashboardCommand : AsyncCommand<DashboardCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--port <N>")]
        [Description("Port of the dashboard's web page (default 7450; 0 picks a free port).")]
        public int? Port { get; init; }

        [CommandOption("--address <IP>")]
        [Description("Address the page listens on (default 127.0.0.1: this machine only). Anyone who reaches it sees what the identity may read.")]
        public string? Address { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        IPAddress address = DashboardBinding.Resolve(settings.Address, Environment.GetEnvironmentVariable);
        int port = DashboardBinding.Port(settings.Port);
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        var reader = new DashboardReader(connection, TimeProvider.System);
        await using DashboardServer server = DashboardServer.Create(reader, address, port);
        try
        {
            await server.StartAsync(cancellationToken);
        }
        catch (IOException ex) when (ex.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException)
        {
            throw new InvalidOperationException($"dashboard port {port} on {address} is in use; stop what holds it or choose another --port", ex);
        }
        if (!IPAddress.IsLoopback(address))
        {
            Console.Error.WriteLine($"coordinator: the dashboard listens on {address}: anyone who reaches it sees what this {Trust.FederationRoleExtension.Name(reader.Role)} identity may read");
        }
        string role = Trust.FederationRoleExtension.Name(reader.Role);
        if (settings.Json)
        {
            Console.Out.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { @event = "listening", address = server.Address.ToString(), port = server.Address.Port, identity = connection.Name, role }));
        }
        else
        {
            Console.Out.WriteLine($"dashboard: {server.Address} (as {connection.Name}, role {role}; Ctrl+C stops it)");
        }
        Console.Out.Flush();
        await server.WaitForShutdownAsync(cancellationToken);
        return CliRunner.Ok;
    }
}
