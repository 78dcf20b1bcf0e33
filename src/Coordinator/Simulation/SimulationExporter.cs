using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Protos.V1;
using Federated.Training.Provenance;
using Grpc.Core;

namespace Federated.Coordinator.Simulation;

/// <summary>
/// Fetches the run's export as the engineer would (AdminService/ExportRun over mutual TLS), checks each file's SHA-256
/// and the CMS signature against the federation CA, and keeps a copy of the CA certificate (never its key) so the
/// folder can be verified after the ephemeral PKI is gone.
/// </summary>
internal static class SimulationExporter
{
    private const int MaxChunkBytes = 1 << 20;
    private const long MaxFileBytes = 1L << 31;
    private const int MaxFiles = 64;

    public static async Task ExportAsync(SimulationExport export, string caCopy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(export);
        ArgumentException.ThrowIfNullOrEmpty(caCopy);
        Directory.CreateDirectory(export.OutDirectory);
        var open = new Dictionary<string, (FileStream Stream, IncrementalHash Hash)>(StringComparer.Ordinal);
        var done = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            using AsyncServerStreamingCall<ExportChunk> call = export.Admin.ExportRun(new ExportRunRequest { RunId = export.RunId },
                export.AsEngineer.Call(cancellationToken, TimeSpan.FromMinutes(5)));
            await foreach (ExportChunk chunk in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                string name = chunk.FileName;
                // The names come from the coordinator: a plain file name only, never a path out of the folder.
                if (name.Length is 0 or > 128 || name is "." or ".." || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
                {
                    throw new InvalidDataException($"the export names an unacceptable file '{name}'");
                }
                if (done.Contains(name))
                {
                    throw new InvalidDataException($"the export sent '{name}' after its last chunk");
                }
                if (chunk.Data.Length > MaxChunkBytes)
                {
                    throw new InvalidDataException($"an export chunk of '{name}' has {chunk.Data.Length} bytes; at most {MaxChunkBytes} are allowed");
                }
                if (!open.TryGetValue(name, out var file))
                {
                    if (open.Count + done.Count >= MaxFiles)
                    {
                        throw new InvalidDataException($"the export has more than {MaxFiles} files");
                    }
                    file = (new FileStream(Path.Combine(export.OutDirectory, name), FileMode.CreateNew, FileAccess.Write), IncrementalHash.CreateHash(HashAlgorithmName.SHA256));
                    open[name] = file;
                }
                if (chunk.Offset != (ulong)file.Stream.Length || file.Stream.Length + chunk.Data.Length > MaxFileBytes)
                {
                    throw new InvalidDataException($"an export chunk of '{name}' starts at {chunk.Offset}, not at {file.Stream.Length}");
                }
                file.Stream.Write(chunk.Data.Span);
                file.Hash.AppendData(chunk.Data.Span);
                if (chunk.Sha256.Length > 0)
                {
                    string actual = Convert.ToHexStringLower(file.Hash.GetHashAndReset());
                    if (!CryptographicOperations.FixedTimeEquals(System.Text.Encoding.ASCII.GetBytes(actual), System.Text.Encoding.ASCII.GetBytes(chunk.Sha256)))
                    {
                        throw new InvalidDataException($"'{name}' arrived with SHA-256 {actual}, not the {chunk.Sha256} the coordinator sent");
                    }
                    await file.Stream.FlushAsync(cancellationToken);
                    file.Stream.Dispose();
                    file.Hash.Dispose();
                    open.Remove(name);
                    done.Add(name);
                }
            }
            if (open.Count > 0)
            {
                throw new InvalidDataException($"the export ended before the last chunk of {string.Join(", ", open.Keys)}");
            }
        }
        finally
        {
            foreach ((FileStream stream, IncrementalHash hash) in open.Values)
            {
                stream.Dispose();
                hash.Dispose();
            }
        }
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(export.CaPath);
        using X509Certificate2 signer = AdapterSignature.Verify(export.OutDirectory, ca);
        File.WriteAllText(caCopy, ca.ExportCertificatePem() + "\n");
    }
}
