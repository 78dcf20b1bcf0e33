using System.ComponentModel;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Engineer: aborts a run; the round in progress releases nothing and charges no budget.</summary>
internal sealed class RunAbortCommand : AsyncCommand<RunAbortCommand.Settings>
{
    public const int MaxReasonLength = 256;

    public sealed class Settings : AdminSettings
    {
        [CommandArgument(0, "<RUN_ID>")]
        [Description("The run to abort.")]
        public string? RunId { get; init; }

        [CommandOption("--reason <TEXT>")]
        [Description("Why, recorded in the run's detail and the audit trail (default: aborted from the CLI).")]
        public string? Reason { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string runId = AdminArguments.RunId(settings.RunId);
        string reason = settings.Reason ?? "aborted from the CLI";
        if (reason.Length > MaxReasonLength || reason.Any(char.IsControl))
        {
            throw new UsageException($"--reason must be at most {MaxReasonLength} characters without control characters, got {reason.Length} characters");
        }
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        AbortRunResponse response = await connection.CallAsync(
            o => connection.Admin.AbortRunAsync(new AbortRunRequest { RunId = runId, Reason = reason }, o), cancellationToken);
        if (settings.Json)
        {
            AdminOutput.Json(AdminOutput.RunStatusJson(response.Status));
        }
        else
        {
            AdminOutput.Terminal().Write(AdminOutput.RunStatusTable(response.Status));
        }
        if (response.Status.State != RunState.Aborted)
        {
            // The run had already ended on its own: nothing was aborted, which a script must be able to tell.
            Console.Error.WriteLine($"coordinator: run {runId} had already ended ({WireNames.State(response.Status.State)}); nothing was aborted");
            return CliRunner.Failed;
        }
        return CliRunner.Ok;
    }
}
