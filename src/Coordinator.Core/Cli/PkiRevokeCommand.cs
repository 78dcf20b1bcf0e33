using System.ComponentModel;
using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Revokes every certificate issued to a name, or the renewal intermediate: the serials go into the root-signed crl.pem that a running coordinator re-reads.</summary>
internal sealed class PkiRevokeCommand : Command<PkiRevokeCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--name <NAME>")]
        [Description("Revoke every certificate issued to this name (give this or --intermediate).")]
        public string? Name { get; init; }

        [CommandOption("--pki <DIR>")]
        [Description("The PKI folder of pki init; crl.pem is written there.")]
        [DefaultValue("pki")]
        public string Pki { get; init; } = "pki";

        [CommandOption("--root-key <FILE>")]
        [Description("The root key where it is kept offline (default: ca.key in the PKI folder); the CRL is the root's to sign.")]
        public string? RootKey { get; init; }

        [CommandOption("--intermediate")]
        [Description("Revoke the renewal intermediate instead of a name: every certificate it signed is refused from then on.")]
        public bool Intermediate { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of text.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (settings.Intermediate == !string.IsNullOrWhiteSpace(settings.Name))
        {
            throw new UsageException("give --name NAME or --intermediate (one of them)");
        }
        if (settings.Intermediate)
        {
            return RevokeIntermediate(settings);
        }
        try
        {
            FederationPki.ValidateName(settings.Name!);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter")[0]);
        }
        using FederationPki pki = LoadRoot(settings, out string directory);
        IReadOnlyList<string> serials = pki.Revoke(settings.Name!);
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

    private static int RevokeIntermediate(Settings settings)
    {
        using FederationPki pki = LoadRoot(settings, out string directory);
        IReadOnlyList<string> serials = pki.RevokeIntermediates();
        string crl = Path.Combine(directory, RevocationList.FileName);
        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { intermediate = true, serials, crl }));
        }
        else
        {
            Console.WriteLine($"revoked the renewal intermediate ({string.Join(", ", serials)}) and with it every certificate it signed; CRL written to {crl}. " +
                "Delete intermediate.key from the coordinator's folder; renewals are refused until a new PKI is made");
        }
        return CliRunner.Ok;
    }

    private static FederationPki LoadRoot(Settings settings, out string directory)
    {
        if (string.IsNullOrWhiteSpace(settings.Pki))
        {
            throw new UsageException("--pki DIR must name the folder of 'pki init'");
        }
        directory = Path.GetFullPath(settings.Pki);
        return FederationPki.Load(directory, TimeProvider.System, string.IsNullOrWhiteSpace(settings.RootKey) ? null : Path.GetFullPath(settings.RootKey));
    }
}
