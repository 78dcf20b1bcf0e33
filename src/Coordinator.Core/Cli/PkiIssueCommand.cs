using System.ComponentModel;
using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Issues a client, engineer or officer identity (or the adapter signer) signed by the federation root.</summary>
internal sealed class PkiIssueCommand : Command<PkiIssueCommand.Settings>
{
    public sealed class Settings : KeyOutputSettings
    {
        [CommandOption("--pki|--ca <DIR>")]
        [Description("The PKI folder of 'pki init' (--ca is its older name here). Required.")]
        public string? Pki { get; init; }

        [CommandOption("--root-key <FILE>")]
        [Description("The root key where it is kept offline (default: ca.key in the PKI folder).")]
        public string? RootKey { get; init; }

        [CommandOption("--adapter-signer")]
        [Description("Issue the coordinator's adapter-signing certificate (adapter-signer.pfx in the PKI folder) instead of an identity.")]
        public bool AdapterSigner { get; init; }

        [CommandOption("--name <NAME>")]
        [Description("The identity's name (the certificate subject: a client id, or who the engineer or officer is). Required unless --adapter-signer.")]
        public string? Name { get; init; }

        [CommandOption("--role <ROLE>")]
        [Description("client, engineer or officer. Required unless --adapter-signer.")]
        public string? Role { get; init; }

        [CommandOption("--replace")]
        [Description("The name already has a valid identity: revoke it (crl.pem) and issue a new one.")]
        public bool Replace { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.Pki))
        {
            throw new UsageException("--pki DIR is required");
        }
        string pkiDirectory = Path.GetFullPath(settings.Pki);
        string? rootKey = string.IsNullOrWhiteSpace(settings.RootKey) ? null : Path.GetFullPath(settings.RootKey);
        if (settings.AdapterSigner)
        {
            return IssueAdapterSigner(pkiDirectory, rootKey, settings.Json);
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

        using FederationPki pki = FederationPki.Load(pkiDirectory, TimeProvider.System, rootKey);
        IReadOnlyList<string> live = pki.LiveSerials(settings.Name);
        IReadOnlyList<string> revoked = [];
        if (live.Count > 0)
        {
            if (!settings.Replace)
            {
                throw new UsageException(
                    $"'{settings.Name}' already has a valid identity (serial {string.Join(", ", live)}); a second would be a second valid identity: pass --replace to revoke it and issue a new one");
            }
            if (File.Exists(pfxPath))
            {
                throw new UsageException($"--out: '{pfxPath}' already exists; move it away or choose another --out before replacing");
            }
            revoked = pki.Revoke(settings.Name);
        }
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
                key_encrypted = password is not null,
                revoked,
            }));
        }
        else
        {
            if (revoked.Count > 0)
            {
                Console.WriteLine($"revoked the previous identity of '{identity.Name}' ({string.Join(", ", revoked)}); crl.pem updated: restart or wait for the coordinator to reload it");
            }
            Console.WriteLine($"issued {FederationRoleExtension.Name(role)} identity '{identity.Name}': {identity.PfxPath} (PEM: {identity.CertificatePath}, {identity.KeyPath}{(password is null ? ", key unencrypted: keep it owner-only" : ", key encrypted with the same password")})");
        }
        return CliRunner.Ok;
    }

    private static int IssueAdapterSigner(string pkiDirectory, string? rootKey, bool json)
    {
        using FederationPki pki = FederationPki.Load(pkiDirectory, TimeProvider.System, rootKey);
        // Unencrypted (owner-only) like the server key: the coordinator signs every global adapter unattended.
        IssuedIdentity signer = pki.IssueAdapterSigner(pkiDirectory, password: null);
        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { adapter_signer = signer.PfxPath, sha256 = signer.Thumbprint }));
        }
        else
        {
            Console.WriteLine($"issued the adapter signer {signer.PfxPath} (code signing only); restart serve to use it");
        }
        return CliRunner.Ok;
    }
}
