using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Officer: a population's budget and the epsilon the ledger has charged against it.</summary>
internal sealed class BudgetShowCommand : AsyncCommand<BudgetShowCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--population <NAME>")]
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
        double remaining = Math.Max(0, budget.Epsilon - budget.EpsilonSpent);
        if (json)
        {
            AdminOutput.Json(new
            {
                Population = budget.Population,
                Epsilon = budget.Epsilon,
                Delta = budget.Delta,
                EpsilonSpent = budget.EpsilonSpent,
                EpsilonRemaining = remaining,
                SetBy = budget.SetBy,
                SetAt = AdminOutput.Time(budget.SetAt),
            });
            return;
        }
        AdminOutput.Terminal().Write(AdminOutput.Properties(
        [
            ("population", budget.Population),
            ("epsilon", AdminOutput.Number(budget.Epsilon)),
            ("delta", AdminOutput.Number(budget.Delta)),
            ("epsilon spent", $"{AdminOutput.Number(budget.EpsilonSpent)} ({(budget.Epsilon > 0 ? budget.EpsilonSpent / budget.Epsilon : 0):P1})"),
            ("epsilon remaining", AdminOutput.Number(remaining)),
            ("set by", $"{budget.SetBy} at {AdminOutput.Time(budget.SetAt)}"),
        ]));
    }
}
