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

        RunStatus? last = await WatchAsync(connection, runId, settings.Json, cancellationToken);
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

    /// <summary>
    /// Follows the run over as many WatchRun streams as it takes, printing each status that differs from the last one
    /// printed; returns the last status once the run has ended, or when the coordinator ends a stream without anything
    /// new (a run it only holds in its state file never changes there).
    /// </summary>
    /// <remarks>
    /// The coordinator caps every stream (MaxStreamSeconds, an hour by default) and ends it with DEADLINE_EXCEEDED, or
    /// with a reset (CANCELLED) when the cap hits a blocked write; a stream may also end cleanly while the run goes on.
    /// None of these is the run's end, so the watch opens a new stream and carries on: a new stream starts with the
    /// current status, which is only printed when it changed.
    /// </remarks>
    internal static async Task<RunStatus?> WatchAsync(AdminConnection connection, string runId, bool json, CancellationToken cancellationToken)
    {
        await connection.FindLeaderAsync(o => connection.Admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, o), cancellationToken);
        RunStatus? last = null;
        while (true)
        {
            bool news = false;
            try
            {
                // No deadline: the stream ends when the run does (or at the server's cap); Ctrl+C cancels it.
                using AsyncServerStreamingCall<RunStatus> watch = connection.Admin.WatchRun(new WatchRunRequest { RunId = runId }, AdminConnection.Options(cancellationToken, timeout: null));
                await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(cancellationToken))
                {
                    if (SameProgress(status, last))
                    {
                        continue;
                    }
                    last = status;
                    news = true;
                    Print(status, json);
                }
            }
            catch (RpcException ex) when (ex.StatusCode is StatusCode.DeadlineExceeded or StatusCode.Cancelled && !cancellationToken.IsCancellationRequested)
            {
                // The server's stream cap (this call sends no deadline of its own, and Ctrl+C is not what ended it).
                if (Ended(last))
                {
                    return last;
                }
                continue;
            }
            catch (RpcException ex)
            {
                throw connection.Failure(ex, cancellationToken);
            }
            if (Ended(last) || !news)
            {
                return last;
            }
        }
    }

    private static bool Ended(RunStatus? status) => status?.State is RunState.Completed or RunState.Aborted or RunState.Failed;

    /// <summary>Equal but for updated_at: what a new stream's first message is when nothing happened in between.</summary>
    private static bool SameProgress(RunStatus status, RunStatus? last)
    {
        if (last is null)
        {
            return false;
        }
        RunStatus a = status.Clone(), b = last.Clone();
        a.UpdatedAt = null;
        b.UpdatedAt = null;
        return a.Equals(b);
    }

    private static void Print(RunStatus status, bool json)
    {
        if (json)
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
