using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Issues a client, engineer or officer identity signed by the federation CA.</summary>
internal sealed class PkiIssueCommand : Command<PkiIssueCommand.Settings>
{
    public sealed class Settings : KeyOutputSettings
    {
        [CommandOption("--ca <DIR>")]
        public string? Ca { get; init; }

        [CommandOption("--name <NAME>")]
        public string? Name { get; init; }

        [CommandOption("--role <ROLE>")]
        public string? Role { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.Ca))
        {
            throw new UsageException("--ca DIR is required");
        }
        if (string.IsNullOrWhiteSpace(settings.Name))
        {
            throw new UsageException("--name NAME is required");
        }
        if (!FederationRoleExtension.TryParse(settings.Role, out FederationRole role))
        {
            throw new UsageException($"--role '{settings.Role}' is invalid: use client, engineer or officer");
        }
        if (string.IsNullOrWhiteSpace(settings.Out) || !settings.Out.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException("--out FILE.pfx is required and must end in .pfx");
        }
        try
        {
            FederationPki.ValidateName(settings.Name);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter")[0]);
        }
        string? password = PasswordFile.Read(settings.PasswordFile);
        string pfxPath = Path.GetFullPath(settings.Out);
        string directory = Path.GetDirectoryName(pfxPath)!;

        using FederationPki pki = FederationPki.Load(Path.GetFullPath(settings.Ca), TimeProvider.System);
        IssuedIdentity identity = pki.IssueIdentity(directory, settings.Name, role, password, pfxPath);

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                name = identity.Name,
                role = FederationRoleExtension.Name(role),
                pfx = identity.PfxPath,
                certificate = identity.CertificatePath,
                key = identity.KeyPath,
                ca = Path.Combine(directory, FederationPki.CaCertificateFile),
                sha256 = identity.Thumbprint,
            }));
        }
        else
        {
            Console.WriteLine($"issued {FederationRoleExtension.Name(role)} identity '{identity.Name}': {identity.PfxPath} (PEM: {identity.CertificatePath}, {identity.KeyPath})");
        }
        return CliRunner.Ok;
    }
}
