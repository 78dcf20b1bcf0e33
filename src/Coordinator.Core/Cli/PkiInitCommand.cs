using System.ComponentModel;
using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Creates the federation root, the coordinator's server and adapter-signing certificates, the first engineer and
/// officer identities and, with --renewal-intermediate, the constrained intermediate serve renews client certificates
/// with. With --root-out the root key goes to its own folder, to be carried off the coordinator host.
/// </summary>
internal sealed class PkiInitCommand : Command<PkiInitCommand.Settings>
{
    public sealed class Settings : KeyOutputSettings
    {
        [CommandOption("--pki <DIR>")]
        [Description("The PKI folder to create, the one serve reads (--out is the older name of this flag). Required.")]
        public string? Pki { get; init; }

        [CommandOption("--host <NAME>")]
        [Description("A DNS name or IP address edge clients reach the coordinator at, added to the server certificate (repeat for several; localhost, 127.0.0.1 and ::1 are always in it).")]
        public string[] Hosts { get; init; } = [];

        [CommandOption("--root-out <DIR>")]
        [Description("Write the root key (ca.key) here instead of the PKI folder: a folder to carry to offline storage.")]
        public string? RootOut { get; init; }

        [CommandOption("--renewal-intermediate")]
        [Description("Also make the intermediate CA serve renews client certificates with (path length 0, clientAuth only).")]
        public bool RenewalIntermediate { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (!string.IsNullOrWhiteSpace(settings.Pki) && !string.IsNullOrWhiteSpace(settings.Out)
            && Path.GetFullPath(settings.Pki) != Path.GetFullPath(settings.Out))
        {
            throw new UsageException("--pki and --out name the same folder (--out is its older name); give one");
        }
        string? folder = string.IsNullOrWhiteSpace(settings.Pki) ? settings.Out : settings.Pki;
        if (string.IsNullOrWhiteSpace(folder))
        {
            throw new UsageException("--pki DIR is required");
        }
        string directory = Path.GetFullPath(folder);
        if (File.Exists(Path.Combine(directory, FederationPki.CaCertificateFile)) || File.Exists(Path.Combine(directory, FederationPki.CaKeyFile)))
        {
            throw new UsageException($"'{directory}' already holds a federation CA; choose an empty folder");
        }
        string rootDirectory = string.IsNullOrWhiteSpace(settings.RootOut) ? directory : Path.GetFullPath(settings.RootOut);
        if (rootDirectory != directory && File.Exists(Path.Combine(rootDirectory, FederationPki.CaKeyFile)))
        {
            throw new UsageException($"--root-out '{rootDirectory}' already holds a root key; choose an empty folder");
        }
        string? password = PasswordFile.Read(settings.PasswordFile);
        foreach (string host in settings.Hosts)
        {
            if (System.Net.IPAddress.TryParse(host, out _) is false && Uri.CheckHostName(host) != UriHostNameType.Dns)
            {
                throw new UsageException($"--host '{host}' is neither a DNS name nor an IP address");
            }
        }

        using FederationPki pki = FederationPki.CreateCa(directory, TimeProvider.System, rootDirectory, settings.RenewalIntermediate);
        // The server's key stays unencrypted (owner-only) because the service must start unattended.
        IssuedIdentity server = pki.IssueServer(directory, settings.Hosts, password: null);
        // Unattended too: the coordinator signs every global adapter as it is stored.
        IssuedIdentity signer = pki.IssueAdapterSigner(directory, password: null);
        // Off until serve is given --at-rest-key: kept beside the other keys, apart from the state it protects.
        string atRestKey = Path.Combine(directory, Storage.AtRestCipher.DefaultFileName);
        Storage.AtRestCipher.CreateKeyFile(atRestKey);
        IssuedIdentity engineer = pki.IssueIdentity(directory, "engineer", FederationRole.Engineer, password);
        IssuedIdentity officer = pki.IssueIdentity(directory, "officer", FederationRole.Officer, password);

        string rootKey = Path.Combine(rootDirectory, FederationPki.CaKeyFile);
        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                directory,
                ca = Path.Combine(directory, FederationPki.CaCertificateFile),
                root_key = rootKey,
                renewal_intermediate = settings.RenewalIntermediate ? Path.Combine(directory, FederationPki.IntermediateName + ".crt") : null,
                server = server.PfxPath,
                adapter_signer = signer.PfxPath,
                at_rest_key = atRestKey,
                engineer = engineer.PfxPath,
                officer = officer.PfxPath,
            }));
        }
        else
        {
            Console.WriteLine($"federation root   {Path.Combine(directory, FederationPki.CaCertificateFile)} (the trust file every participant gets)");
            Console.WriteLine(rootDirectory == directory
                ? $"root key          {rootKey} (owner-only; serve never reads it: move it offline and pass --root-key FILE to 'pki issue' and 'pki revoke')"
                : $"root key          {rootKey} (owner-only; carry {rootDirectory} to offline storage: 'pki issue' and 'pki revoke' take --root-key FILE)");
            Console.WriteLine(settings.RenewalIntermediate
                ? $"renewal CA        {Path.Combine(directory, FederationPki.IntermediateName + ".crt")} (path length 0, clientAuth only: serve renews client certificates with it)"
                : "renewal CA        none (renewal RPCs are refused; re-run with --renewal-intermediate to allow them)");
            Console.WriteLine($"server            {server.PfxPath} (SANs: localhost, 127.0.0.1, ::1{string.Concat(settings.Hosts.Select(h => ", " + h))})");
            Console.WriteLine($"adapter signer    {signer.PfxPath} (code signing: CMS signatures of served and exported adapters)");
            Console.WriteLine($"at-rest key       {atRestKey} (owner-only; 'serve --at-rest-key {atRestKey}' encrypts stored adapters)");
            Console.WriteLine($"engineer identity {engineer.PfxPath}");
            Console.WriteLine($"officer identity  {officer.PfxPath}");
        }
        return CliRunner.Ok;
    }
}
