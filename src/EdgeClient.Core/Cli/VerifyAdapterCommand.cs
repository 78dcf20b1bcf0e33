using System.ComponentModel;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Training.Provenance;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>`edge-client verify-adapter DIR`: checks an adapter folder's CMS signature against the federation CA.</summary>
internal sealed class VerifyAdapterCommand : Command<VerifyAdapterCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<DIR>")]
        [Description("The adapter folder (adapter_config.json, adapter_model.safetensors, adapter.p7s).")]
        public string Directory { get; init; } = "";

        [CommandOption("--ca <FILE>")]
        [Description("The federation CA certificate, PEM or DER (default: ca.crt in the current folder).")]
        public string Ca { get; init; } = "ca.crt";

        [CommandOption("--json")]
        [Description("Print one JSON object.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (!File.Exists(settings.Ca))
        {
            throw new UsageException($"--ca: federation CA certificate not found: {settings.Ca}");
        }
        X509Certificate2 ca;
        try
        {
            ca = FederationCaBundle.LoadRoot(settings.Ca);
        }
        catch (CryptographicException ex)
        {
            throw new UsageException($"--ca: {settings.Ca} is not a certificate ({ex.Message.TrimEnd('.')})");
        }
        using (ca)
        {
            try
            {
                using X509Certificate2 signer = AdapterSignature.Verify(settings.Directory, ca);
                Console.WriteLine(settings.Json
                    ? JsonSerializer.Serialize(new { adapter_dir = settings.Directory, valid = true, signer = signer.Subject, signer_sha256 = signer.GetCertHashString(HashAlgorithmName.SHA256) })
                    : $"OK: {settings.Directory} is signed by {signer.Subject}, which chains to {ca.Subject}");
                return CliRunner.Ok;
            }
            catch (AdapterSignatureException ex)
            {
                if (settings.Json)
                {
                    Console.WriteLine(JsonSerializer.Serialize(new { adapter_dir = settings.Directory, valid = false, error = ex.Message }));
                }
                else
                {
                    Console.Error.WriteLine($"edge-client: REFUSED: {ex.Message}");
                }
                return CliRunner.Failed;
            }
        }
    }
}
