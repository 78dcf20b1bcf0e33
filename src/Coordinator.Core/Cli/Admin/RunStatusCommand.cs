using System.ComponentModel;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Grpc.Core;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Engineer or officer: a run's progress (round, stage, clients reported, epsilon spent against the budget); with
/// --watch it follows the run until it ends and exits 0 when it completed, 1 when it failed or was aborted.
/// </summary>
internal sealed class RunStatusCommand : AsyncCommand<RunStatusCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandArgument(0, "<RUN_ID>")]
        [Description("The run, as 'run start' printed it.")]
        public string? RunId { get; init; }

        [CommandOption("--watch")]
        [Description("Follow the run until it ends, one line (or JSON object) per change; exit 0 when it completed, 1 when it failed or was aborted. Re-watches by itself when the coordinator ends the stream.")]
        public bool Watch { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string runId = AdminArguments.RunId(settings.RunId);
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        if (!settings.Watch)
        {
            RunStatus status = await connection.CallAsync(o => connection.Admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, o), cancellationToken);
            if (settings.Json)
            {
                AdminOutput.Json(AdminOutput.RunStatusJson(status));
            }
            else
            {
                AdminOutput.Terminal().Write(AdminOutput.RunStatusTable(status));
            }
            return CliRunner.Ok;
        }

        RunStatus? last = null;
        try
        {
            // No deadline: the stream ends when the run does; Ctrl+C cancels it.
            using AsyncServerStreamingCall<RunStatus> watch = connection.Admin.WatchRun(new WatchRunRequest { RunId = runId }, AdminConnection.Options(cancellationToken, timeout: null));
            await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(cancellationToken))
            {
                last = status;
                if (settings.Json)
                {
                    AdminOutput.Json(AdminOutput.RunStatusJson(status));
                }
                else
                {
                    // The time of arrival: the server's updated_at moves only with run-level changes, not stages.
                    Console.Out.WriteLine($"{DateTime.Now:HH:mm:ss}  {AdminOutput.ProgressLine(status)}");
                }
            }
        }
        catch (RpcException ex)
        {
            throw connection.Failure(ex, cancellationToken);
        }
        switch (last?.State)
        {
            case RunState.Completed:
                return CliRunner.Ok;
            case RunState.Aborted or RunState.Failed:
                Console.Error.WriteLine($"coordinator: run {runId} {WireNames.State(last.State)}: {last.Detail}");
                return CliRunner.Failed;
            default:
                throw new AdminCallException(StatusCode.Unavailable, $"the coordinator ended the watch of run {runId} before the run ended");
        }
    }
}
