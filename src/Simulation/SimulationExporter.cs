using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Cli;
using Federated.Training.Provenance;
using Federated.Trust;

namespace Federated.Simulation;

/// <summary>
/// Fetches the run's export as the engineer would (AdminService/ExportRun over mutual TLS), checks each file's SHA-256
/// and the CMS signature against the federation CA, and keeps a copy of the CA certificate (never its key) so the
/// folder can be verified after the ephemeral PKI is gone.
/// </summary>
internal static class SimulationExporter
{
    public static async Task ExportAsync(SimulationExport export, string caCopy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(export);
        ArgumentException.ThrowIfNullOrEmpty(caCopy);
        Directory.CreateDirectory(export.OutDirectory);
        await RunExportDownload.DownloadAsync(export.Admin, export.AsEngineer.Call(cancellationToken, TimeSpan.FromMinutes(5)), export.RunId,
            export.OutDirectory, cancellationToken);
        using X509Certificate2 ca = FederationCaBundle.LoadRoot(export.CaPath);
        using X509Certificate2 signer = AdapterSignature.Verify(export.OutDirectory, ca);
        File.WriteAllText(caCopy, ca.ExportCertificatePem() + "\n");
    }
}
