using System.ComponentModel;
using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Officer: a population's budget, what released rounds spent, what running runs reserved and what remains, RDP composed per order.</summary>
internal sealed class BudgetShowCommand : AsyncCommand<BudgetShowCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--population <NAME>")]
        [Description("The population to show (default: default).")]
        public string? Population { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var request = new GetBudgetRequest { Population = AdminArguments.Population(settings.Population) };
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        Budget budget = await connection.CallAsync(o => connection.Admin.GetBudgetAsync(request, o), cancellationToken);
        Print(budget, settings.Json);
        return CliRunner.Ok;
    }

    internal static void Print(Budget budget, bool json)
    {
        if (json)
        {
            AdminOutput.Json(new
            {
                Population = budget.Population,
                Epsilon = budget.Epsilon,
                Delta = budget.Delta,
                EpsilonSpent = budget.EpsilonSpent,
                EpsilonReserved = budget.EpsilonReserved,
                EpsilonRemaining = budget.EpsilonRemaining,
                PrivacyUnit = budget.PrivacyUnit,
                Adjacency = budget.Adjacency,
                SetBy = budget.SetBy,
                SetAt = AdminOutput.Time(budget.SetAt),
            });
            return;
        }
        string Share(double part) => budget.Epsilon > 0 ? $" ({part / budget.Epsilon:P1})" : "";
        AdminOutput.Terminal().Write(AdminOutput.Properties(
        [
            ("population", budget.Population),
            ("epsilon", $"{AdminOutput.Number(budget.Epsilon)} {AdminOutput.StatedFor(budget.Delta, budget.PrivacyUnit, budget.Adjacency)}"),
            ("delta", AdminOutput.Number(budget.Delta)),
            ("epsilon spent", AdminOutput.Number(budget.EpsilonSpent) + Share(budget.EpsilonSpent)),
            ("epsilon reserved", AdminOutput.Number(budget.EpsilonReserved) + Share(budget.EpsilonReserved) + " (running runs' planned rounds not yet released)"),
            ("epsilon remaining", AdminOutput.Number(budget.EpsilonRemaining)),
            ("set by", $"{budget.SetBy} at {AdminOutput.Time(budget.SetAt)}"),
        ]));
    }
}
