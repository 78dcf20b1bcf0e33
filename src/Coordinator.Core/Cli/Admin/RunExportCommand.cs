using System.ComponentModel;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Federated.Training.Provenance;
using Grpc.Core;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Engineer: downloads a run's exported PEFT adapter folder (ExportRun), checks every file's SHA-256 as it arrives
/// and the folder's CMS signature against the federation CA once written; a folder that fails is removed.
/// </summary>
internal sealed class RunExportCommand : AsyncCommand<RunExportCommand.Settings>
{
    /// <summary>How long the whole download may take.</summary>
    private static readonly TimeSpan s_timeout = TimeSpan.FromMinutes(30);

    public sealed class Settings : AdminSettings
    {
        [CommandArgument(0, "<RUN_ID>")]
        [Description("The run whose latest global adapter is exported.")]
        public string? RunId { get; init; }

        [CommandOption("--out <DIR>")]
        [Description("An empty or new folder for the PEFT adapter, its signature and provenance.json. Required.")]
        public string? Out { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string runId = AdminArguments.RunId(settings.RunId);
        if (string.IsNullOrWhiteSpace(settings.Out))
        {
            throw new UsageException("--out DIR is required: an empty or new folder for the adapter");
        }
        string directory = Path.GetFullPath(settings.Out);
        if (File.Exists(directory))
        {
            throw new UsageException($"--out '{directory}' is a file; give an empty or new folder");
        }
        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
        {
            throw new UsageException($"--out '{directory}' is not empty; give an empty or new folder");
        }
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        // The export is one stream: with standbys listed, the leader is found first (engineers may read a run's status).
        await connection.FindLeaderAsync(o => connection.Admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, o), cancellationToken);

        bool created = !Directory.Exists(directory);
        Directory.CreateDirectory(directory);
        try
        {
            IReadOnlyList<(string Name, long Size, string Sha256)> files;
            // Progress goes to stderr in text mode only: with --json, stdout's one object is all there is.
            ExportProgress? progress = settings.Json ? null : ExportProgress.ForConsole();
            try
            {
                files = await RunExportDownload.DownloadAsync(connection.Admin, AdminConnection.Options(cancellationToken, s_timeout), runId, directory, cancellationToken,
                    progress is null ? null : progress.Report);
            }
            catch (RpcException ex)
            {
                throw connection.Failure(ex, cancellationToken);
            }
            finally
            {
                progress?.Finish();
            }
            X509Certificate2 signer;
            try
            {
                signer = AdapterSignature.Verify(directory, connection.Ca);
            }
            catch (AdapterSignatureException ex)
            {
                throw new AdminCallException(StatusCode.DataLoss, $"the exported adapter does not verify: {ex.Message}");
            }
            using (signer)
            {
                Report(settings.Json, runId, directory, files, signer);
            }
            return CliRunner.Ok;
        }
        catch
        {
            // Nothing unverified is left behind.
            RunExporter.DiscardPartial(directory, created);
            throw;
        }
    }

    private static void Report(bool json, string runId, string directory, IReadOnlyList<(string Name, long Size, string Sha256)> files, X509Certificate2 signer)
    {
        using JsonDocument provenance = JsonDocument.Parse(File.ReadAllText(Path.Combine(directory, RunExporter.ProvenanceFileName)));
        JsonElement p = provenance.RootElement;
        double epsilon = p.GetProperty("epsilon_spent").GetDouble();
        double delta = p.GetProperty("delta").GetDouble();
        int released = p.GetProperty("rounds_released").GetInt32();
        string adapterSha = p.GetProperty("adapter_sha256").GetString() ?? "";
        if (json)
        {
            AdminOutput.Json(new
            {
                RunId = runId,
                Out = directory,
                Files = files.Select(f => new { Name = f.Name, Size = f.Size, Sha256 = f.Sha256 }).ToArray(),
                Verified = true,
                Signer = signer.Subject,
                AdapterSha256 = adapterSha,
                EpsilonSpent = epsilon,
                Delta = delta,
                RoundsReleased = released,
            });
            return;
        }
        Table table = AdminOutput.Table("file", "bytes", "sha256");
        foreach ((string name, long size, string sha) in files)
        {
            table.AddRow(Markup.Escape(name), size.ToString(System.Globalization.CultureInfo.InvariantCulture), sha);
        }
        IAnsiConsole terminal = AdminOutput.Terminal();
        terminal.Write(table);
        Console.Out.WriteLine($"exported run {runId} to {directory}");
        Console.Out.WriteLine($"signature verified: signed by {signer.Subject}, chained to the federation CA");
        Console.Out.WriteLine($"privacy: epsilon {AdminOutput.Number(epsilon)} at delta {AdminOutput.Number(delta)} over {released} released rounds (provenance.json)");
    }
}
