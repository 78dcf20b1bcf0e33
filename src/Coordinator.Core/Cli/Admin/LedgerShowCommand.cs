using System.ComponentModel;
using System.Globalization;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Officer: the privacy ledger, one charge per released round, optionally for one run or population.</summary>
internal sealed class LedgerShowCommand : AsyncCommand<LedgerShowCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--run <RUN_ID>")]
        [Description("Only this run's charges (default: every run).")]
        public string? Run { get; init; }

        [CommandOption("--population <NAME>")]
        [Description("Only this population's charges (default: every population).")]
        public string? Population { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var request = new GetLedgerRequest
        {
            RunId = settings.Run is null ? "" : AdminArguments.RunId(settings.Run),
            Population = AdminArguments.Population(settings.Population),
        };
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        GetLedgerResponse response = await connection.CallAsync(o => connection.Admin.GetLedgerAsync(request, o), cancellationToken);
        if (settings.Json)
        {
            AdminOutput.Json(new
            {
                Entries = response.Entries.Select(e => new
                {
                    Sequence = e.Sequence,
                    RunId = e.RunId,
                    Round = e.Round,
                    Population = e.Population,
                    EpsilonAfter = e.EpsilonAfter,
                    EpsilonDelta = e.EpsilonDelta,
                    Delta = e.Delta,
                    Mechanism = WireNames.Mechanism(e.Mechanism),
                    NoiseMultiplier = e.NoiseMultiplier,
                    ClipNorm = e.ClipNorm,
                    Participants = e.Participants,
                    ChargedAt = AdminOutput.Time(e.ChargedAt),
                    PrivacyUnit = e.PrivacyUnit,
                    Adjacency = e.Adjacency,
                }).ToArray(),
            });
            return CliRunner.Ok;
        }
        Table table = AdminOutput.Table("#", "run", "round", "population", "epsilon after", "+epsilon", "delta", "unit", "mechanism", "z", "C", "participants", "charged at");
        foreach (LedgerEntry e in response.Entries)
        {
            table.AddRow(
                e.Sequence.ToString(CultureInfo.InvariantCulture), Markup.Escape(e.RunId), e.Round.ToString(CultureInfo.InvariantCulture), Markup.Escape(e.Population),
                AdminOutput.Number(e.EpsilonAfter), AdminOutput.Number(e.EpsilonDelta), AdminOutput.Number(e.Delta), $"{e.PrivacyUnit}, {e.Adjacency}", WireNames.Mechanism(e.Mechanism),
                AdminOutput.Number(e.NoiseMultiplier), AdminOutput.Number(e.ClipNorm), e.Participants.ToString(CultureInfo.InvariantCulture), AdminOutput.Time(e.ChargedAt) ?? "");
        }
        AdminOutput.Terminal().Write(table);
        Console.Out.WriteLine($"{response.Entries.Count} charge(s); epsilon after: the run's own epsilon at its delta (a population's total is 'budget show', composed per RDP order)");
        return CliRunner.Ok;
    }
}
