using System.ComponentModel;
using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Officer: sets a population's total (epsilon, delta) budget; runs that would exceed it are refused.</summary>
internal sealed class BudgetSetCommand : AsyncCommand<BudgetSetCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--epsilon <E>")]
        [Description("The population's total epsilon, > 0. Required.")]
        public string? Epsilon { get; init; }

        [CommandOption("--delta <D>")]
        [Description("The delta the budget holds at, in (0, 1). Required.")]
        public string? Delta { get; init; }

        [CommandOption("--population <NAME>")]
        [Description("The population the budget is for (default: default).")]
        public string? Population { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var request = new SetBudgetRequest
        {
            Epsilon = AdminArguments.Number(settings.Epsilon, "--epsilon", "> 0", v => v > 0),
            Delta = AdminArguments.Number(settings.Delta, "--delta", "in (0, 1)", v => v > 0 && v < 1),
            Population = AdminArguments.Population(settings.Population),
        };
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        Budget budget = await connection.CallAsync(o => connection.Admin.SetBudgetAsync(request, o), cancellationToken);
        BudgetShowCommand.Print(budget, settings.Json);
        return CliRunner.Ok;
    }
}
