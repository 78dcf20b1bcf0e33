using System.ComponentModel;
using System.Security.Cryptography;
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
    /// <summary>Most files an export may hold (it has four).</summary>
    public const int MaxFiles = 16;

    /// <summary>Most bytes an export may hold in all (a rank-256 adapter on a 70B model is well below).</summary>
    public const long MaxTotalBytes = 8L << 30;

    private const int MaxChunkBytes = 1 << 20;
    private const int MaxFileNameLength = 128;

    /// <summary>How long the whole download may take.</summary>
    private static readonly TimeSpan s_timeout = TimeSpan.FromMinutes(30);

    public sealed class Settings : AdminSettings
    {
        [CommandArgument(0, "<RUN_ID>")]
        [Description("The run whose latest global adapter is exported.")]
        public string? RunId { get; init; }

        [CommandOption("--out <DIR>")]
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

        bool created = !Directory.Exists(directory);
        Directory.CreateDirectory(directory);
        try
        {
            IReadOnlyList<(string Name, long Size, string Sha256)> files;
            try
            {
                files = await DownloadAsync(connection.Admin, AdminConnection.Options(cancellationToken, s_timeout), runId, directory, cancellationToken);
            }
            catch (RpcException ex)
            {
                throw connection.Failure(ex, cancellationToken);
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

    /// <summary>
    /// Writes an ExportRun stream's files into <paramref name="directory"/> (the CLI's and simulate's one reader); every
    /// field from the wire is checked before it touches the disk. The caller verifies the signature and maps RpcException.
    /// </summary>
    internal static async Task<IReadOnlyList<(string Name, long Size, string Sha256)>> DownloadAsync(
        AdminService.AdminServiceClient admin, CallOptions options, string runId, string directory, CancellationToken cancellationToken)
    {
        var finished = new List<(string Name, long Size, string Sha256)>();
        var finishedNames = new HashSet<string>(StringComparer.Ordinal);
        string? current = null;
        FileStream? output = null;
        IncrementalHash? hash = null;
        long written = 0, total = 0;
        try
        {
            using AsyncServerStreamingCall<ExportChunk> call = admin.ExportRun(new ExportRunRequest { RunId = runId }, options);
            await foreach (ExportChunk chunk in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                if (chunk.FileName != current)
                {
                    if (current is not null)
                    {
                        throw Invalid($"file {current} ended without its SHA-256");
                    }
                    ValidateFileName(chunk.FileName);
                    if (finishedNames.Contains(chunk.FileName))
                    {
                        throw Invalid($"file {chunk.FileName} was sent twice");
                    }
                    if (finishedNames.Count >= MaxFiles)
                    {
                        throw Invalid($"more than {MaxFiles} files");
                    }
                    current = chunk.FileName;
                    output = new FileStream(Path.Combine(directory, current), FileMode.CreateNew, FileAccess.Write, FileShare.None);
                    hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                    written = 0;
                }
                if (chunk.Offset != (ulong)written)
                {
                    throw Invalid($"chunk of {current} at offset {chunk.Offset}, expected {written}");
                }
                if (chunk.Data.Length > MaxChunkBytes)
                {
                    throw Invalid($"chunk of {current} has {chunk.Data.Length} bytes; at most {MaxChunkBytes} are allowed");
                }
                total += chunk.Data.Length;
                if (total > MaxTotalBytes)
                {
                    throw Invalid($"the export exceeds {MaxTotalBytes} bytes");
                }
                await output!.WriteAsync(chunk.Data.Memory, cancellationToken);
                hash!.AppendData(chunk.Data.Span);
                written += chunk.Data.Length;
                if (chunk.Sha256.Length > 0)
                {
                    string actual = Convert.ToHexStringLower(hash.GetHashAndReset());
                    if (!CryptographicOperations.FixedTimeEquals(System.Text.Encoding.ASCII.GetBytes(actual), System.Text.Encoding.ASCII.GetBytes(chunk.Sha256)))
                    {
                        throw Invalid($"file {current} hashes to {actual}, not the announced {chunk.Sha256}");
                    }
                    output.Flush(flushToDisk: true);
                    await output.DisposeAsync();
                    hash.Dispose();
                    (output, hash) = (null, null);
                    finished.Add((current!, written, actual));
                    finishedNames.Add(current!);
                    current = null;
                }
            }
        }
        finally
        {
            if (output is not null)
            {
                await output.DisposeAsync();
            }
            hash?.Dispose();
        }
        if (current is not null)
        {
            throw Invalid($"the stream ended inside file {current}");
        }
        if (!finishedNames.Contains(AdapterSignature.SignatureFileName))
        {
            throw Invalid($"the export has no {AdapterSignature.SignatureFileName}");
        }
        return finished;
    }

    private static void ValidateFileName(string name)
    {
        if (name.Length is 0 or > MaxFileNameLength || name is "." or ".." || name.StartsWith('.')
            || name.IndexOfAny(['/', '\\', ':']) >= 0 || name.Any(char.IsControl) || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
        {
            throw Invalid($"file name '{name}' is not a plain file name");
        }
    }

    private static AdminCallException Invalid(string problem) =>
        new(StatusCode.DataLoss, $"the coordinator sent a malformed export: {problem}");

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
