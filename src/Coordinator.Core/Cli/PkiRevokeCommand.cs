using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Revokes every certificate issued to a name: its serials go into the CA-signed crl.pem that a running coordinator re-reads.</summary>
internal sealed class PkiRevokeCommand : Command<PkiRevokeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--name <NAME>")]
        public string? Name { get; init; }

        [CommandOption("--pki <DIR>")]
        public string Pki { get; init; } = "pki";

        [CommandOption("--root-key <FILE>")]
        [System.ComponentModel.Description("The root key where it is kept offline (default: ca.key in the PKI folder); the CRL is the root's to sign.")]
        public string? RootKey { get; init; }

        [CommandOption("--json")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.Name))
        {
            throw new UsageException("--name NAME is required");
        }
        try
        {
            FederationPki.ValidateName(settings.Name);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter")[0]);
        }
        if (string.IsNullOrWhiteSpace(settings.Pki))
        {
            throw new UsageException("--pki DIR must name the folder of 'pki init'");
        }
        string directory = Path.GetFullPath(settings.Pki);
        using FederationPki pki = FederationPki.Load(directory, TimeProvider.System, string.IsNullOrWhiteSpace(settings.RootKey) ? null : Path.GetFullPath(settings.RootKey));
        IReadOnlyList<string> serials = pki.Revoke(settings.Name);
        string crl = Path.Combine(directory, RevocationList.FileName);
        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { name = settings.Name, serials, crl }));
        }
        else
        {
            Console.WriteLine($"revoked {serials.Count} certificate(s) of '{settings.Name}' ({string.Join(", ", serials)}); CRL written to {crl}");
        }
        return CliRunner.Ok;
    }
}
