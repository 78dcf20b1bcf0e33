using System.ComponentModel;
using Federated.Coordinator.Reports;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Engineer or officer: writes a run's report into a folder: report.html (self-contained) and PNG plots of epsilon and
/// participation per round, from the run status, the verified audit trail and (for an officer) the ledger.
/// </summary>
internal sealed class RunReportCommand : AsyncCommand<RunReportCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--run <RUN_ID>")]
        [Description("The run, as 'run start' printed it.")]
        public string? Run { get; init; }

        [CommandOption("--out <DIR>")]
        [Description("Folder for report.html and the PNG plots (created if absent; earlier report files in it are replaced).")]
        public string? Out { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(settings.Run))
        {
            throw new UsageException("--run RUN_ID is required: the run, as 'run start' printed it");
        }
        string runId = AdminArguments.RunId(settings.Run);
        if (string.IsNullOrWhiteSpace(settings.Out))
        {
            throw new UsageException("--out DIR is required: the folder for report.html and its plots");
        }
        string directory = Path.GetFullPath(settings.Out);
        if (File.Exists(directory))
        {
            throw new UsageException($"--out '{directory}' is a file; give a folder (new or existing)");
        }
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        RunReport report = await RunReportSource.ReadAsync(connection, runId, cancellationToken);
        IReadOnlyList<string> files = RunReportWriter.Write(report, directory);
        if (settings.Json)
        {
            AdminOutput.Json(new
            {
                RunId = report.RunId,
                Out = directory,
                Report = Path.Combine(directory, RunReportWriter.HtmlFile),
                Files = files,
                Rounds = report.Rounds.Select(r => new
                {
                    Round = r.Round,
                    Outcome = r.Outcome.ToString().ToLowerInvariant(),
                    Selected = r.Selected,
                    Survivors = r.Survivors,
                    Declined = r.Declined,
                    Dropouts = r.Dropouts,
                    EpsilonAfter = r.EpsilonAfter,
                }).ToArray(),
            });
            return CliRunner.Ok;
        }
        Console.Out.WriteLine($"report of run {report.RunId} ({report.Rounds.Count} round(s)): {Path.Combine(directory, RunReportWriter.HtmlFile)}");
        Console.Out.WriteLine($"plots: {string.Join(", ", files.Where(f => f != RunReportWriter.HtmlFile))} (no loss plot: the coordinator holds no loss)");
        return CliRunner.Ok;
    }
}
