using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Creates the federation CA, the coordinator's server and adapter-signing certificates and the first engineer and officer identities.</summary>
internal sealed class PkiInitCommand : Command<PkiInitCommand.Settings>
{
    public sealed class Settings : KeyOutputSettings
    {
        [CommandOption("--host <NAME>")]
        public string[] Hosts { get; init; } = [];
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.Out))
        {
            throw new UsageException("--out DIR is required");
        }
        string directory = Path.GetFullPath(settings.Out);
        if (File.Exists(Path.Combine(directory, FederationPki.CaCertificateFile)) || File.Exists(Path.Combine(directory, FederationPki.CaKeyFile)))
        {
            throw new UsageException($"'{directory}' already holds a federation CA; choose an empty folder");
        }
        string? password = PasswordFile.Read(settings.PasswordFile);
        foreach (string host in settings.Hosts)
        {
            if (System.Net.IPAddress.TryParse(host, out _) is false && Uri.CheckHostName(host) != UriHostNameType.Dns)
            {
                throw new UsageException($"--host '{host}' is neither a DNS name nor an IP address");
            }
        }

        using FederationPki pki = FederationPki.CreateCa(directory, TimeProvider.System);
        // The server's key stays unencrypted (owner-only) because the service must start unattended.
        IssuedIdentity server = pki.IssueServer(directory, settings.Hosts, password: null);
        // Unattended too: the coordinator signs every global adapter as it is stored.
        IssuedIdentity signer = pki.IssueAdapterSigner(directory, password: null);
        // Off until serve is given --at-rest-key: kept beside the other keys, apart from the state it protects.
        string atRestKey = Path.Combine(directory, Storage.AtRestCipher.DefaultFileName);
        Storage.AtRestCipher.CreateKeyFile(atRestKey);
        IssuedIdentity engineer = pki.IssueIdentity(directory, "engineer", FederationRole.Engineer, password);
        IssuedIdentity officer = pki.IssueIdentity(directory, "officer", FederationRole.Officer, password);

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                directory,
                ca = Path.Combine(directory, FederationPki.CaCertificateFile),
                server = server.PfxPath,
                adapter_signer = signer.PfxPath,
                at_rest_key = atRestKey,
                engineer = engineer.PfxPath,
                officer = officer.PfxPath,
            }));
        }
        else
        {
            Console.WriteLine($"federation CA     {Path.Combine(directory, FederationPki.CaCertificateFile)} (key {FederationPki.CaKeyFile}, owner-only: keep it offline)");
            Console.WriteLine($"server            {server.PfxPath} (SANs: localhost, 127.0.0.1, ::1{string.Concat(settings.Hosts.Select(h => ", " + h))})");
            Console.WriteLine($"adapter signer    {signer.PfxPath} (code signing: CMS signatures of served and exported adapters)");
            Console.WriteLine($"at-rest key       {atRestKey} (owner-only; 'serve --at-rest-key {atRestKey}' encrypts stored adapters)");
            Console.WriteLine($"engineer identity {engineer.PfxPath}");
            Console.WriteLine($"officer identity  {officer.PfxPath}");
        }
        return CliRunner.Ok;
    }
}
