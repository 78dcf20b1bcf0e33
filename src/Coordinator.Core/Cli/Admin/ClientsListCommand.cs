using System.ComponentModel;
using System.Globalization;
using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Engineer: the registered edge clients, their liveness, how many rounds each took part in, the population it belongs
/// to and its own epsilon over every released round it contributed to (what its edge ledger shows for those rounds).
/// </summary>
internal sealed class ClientsListCommand : AsyncCommand<ClientsListCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--seen-within <SECONDS>")]
        [Description("Only clients seen within this many seconds, 1..31536000 (default: all clients).")]
        public string? SeenWithin { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        uint seenWithin = AdminArguments.OptionalInteger(settings.SeenWithin, "--seen-within", 1, 31_536_000) ?? 0;
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        ListClientsResponse response = await connection.CallAsync(
            o => connection.Admin.ListClientsAsync(new ListClientsRequest { SeenWithinSeconds = seenWithin }, o), cancellationToken);
        if (settings.Json)
        {
            AdminOutput.Json(new
            {
                Clients = response.Clients.Select(c => new
                {
                    ClientId = c.ClientId,
                    Available = c.Available,
                    LastSeenAt = AdminOutput.Time(c.LastSeenAt),
                    RegisteredAt = AdminOutput.Time(c.RegisteredAt),
                    RoundsParticipated = c.RoundsParticipated,
                    ClientVersion = c.ClientVersion,
                    CertificateSha256 = c.CertificateSha256,
                    Population = c.Population.Length == 0 ? null : c.Population,
                    Epsilon = c.Epsilon,
                    Delta = c.Population.Length == 0 ? (double?)null : c.Delta,
                    PrivacyUnit = c.PrivacyUnit,
                    Adjacency = c.Adjacency,
                }).ToArray(),
            });
            return CliRunner.Ok;
        }
        Table table = AdminOutput.Table("client", "available", "last seen", "rounds", "population", "epsilon", "version", "certificate sha256");
        foreach (ClientInfo c in response.Clients)
        {
            string epsilon = c.Population.Length == 0 ? "0" : $"{AdminOutput.Number(c.Epsilon)} {AdminOutput.StatedFor(c.Delta, c.PrivacyUnit, c.Adjacency)}";
            table.AddRow(Markup.Escape(c.ClientId), c.Available ? "yes" : "no", AdminOutput.Time(c.LastSeenAt) ?? "",
                c.RoundsParticipated.ToString(CultureInfo.InvariantCulture), Markup.Escape(c.Population.Length == 0 ? "-" : c.Population), Markup.Escape(epsilon),
                Markup.Escape(c.ClientVersion), c.CertificateSha256[..Math.Min(16, c.CertificateSha256.Length)]);
        }
        AdminOutput.Terminal().Write(table);
        Console.Out.WriteLine($"{response.Clients.Count} client(s)");
        return CliRunner.Ok;
    }
}
