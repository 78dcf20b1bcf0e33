using System.Security.Cryptography;
using Federated.Protos.V1;
using Federated.Training.Provenance;
using Grpc.Core;

namespace Federated.Coordinator.Cli;

/// <summary>The one reader of an ExportRun stream, shared by `run export` and `simulate`: writes the files and checks each as it arrives.</summary>
public static class RunExportDownload
{
    /// <summary>Most files an export may hold (it has four).</summary>
    public const int MaxFiles = 16;

    /// <summary>Most bytes an export may hold in all (a rank-256 adapter on a 70B model is well below).</summary>
    public const long MaxTotalBytes = 8L << 30;

    private const int MaxChunkBytes = 1 << 20;
    private const int MaxFileNameLength = 128;

    /// <summary>
    /// Writes an ExportRun stream's files into <paramref name="directory"/> (the CLI's and simulate's one reader); every
    /// field from the wire is checked before it touches the disk. The caller verifies the signature and maps RpcException.
    /// <paramref name="progress"/> hears (bytes received, bytes announced in all; 0 when the coordinator sent no total) after each chunk.
    /// </summary>
    public static async Task<IReadOnlyList<(string Name, long Size, string Sha256)>> DownloadAsync(
        AdminService.AdminServiceClient admin, CallOptions options, string runId, string directory, CancellationToken cancellationToken,
        Action<long, long>? progress = null)
    {
        var finished = new List<(string Name, long Size, string Sha256)>();
        var finishedNames = new HashSet<string>(StringComparer.Ordinal);
        string? current = null;
        FileStream? output = null;
        IncrementalHash? hash = null;
        long written = 0, total = 0;
        ulong? announced = null;
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
                if (announced is null)
                {
                    announced = chunk.TotalBytes;
                    if (announced > MaxTotalBytes)
                    {
                        throw Invalid($"it announces {announced} bytes; at most {MaxTotalBytes} are allowed");
                    }
                }
                else if (chunk.TotalBytes != announced)
                {
                    throw Invalid($"the announced size changed from {announced} to {chunk.TotalBytes} bytes");
                }
                total += chunk.Data.Length;
                if (total > MaxTotalBytes)
                {
                    throw Invalid($"the export exceeds {MaxTotalBytes} bytes");
                }
                if (announced > 0 && (ulong)total > announced)
                {
                    throw Invalid($"more than the announced {announced} bytes");
                }
                await output!.WriteAsync(chunk.Data.Memory, cancellationToken);
                hash!.AppendData(chunk.Data.Span);
                written += chunk.Data.Length;
                progress?.Invoke(total, (long)announced.Value);
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
        if (announced > 0 && (ulong)total != announced)
        {
            throw Invalid($"the stream ended after {total} of the announced {announced} bytes");
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
}
