using System.ComponentModel;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Transport;
using Federated.Trust;
using Google.Protobuf;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>Renews this machine's certificate: a new P-256 key made here, a CSR sent over mutual TLS, the CA-signed certificate checked and saved.</summary>
internal sealed class RenewCommand : AsyncCommand<RenewCommand.Settings>
{
    public sealed class Settings : KeyOutputSettings
    {
        [CommandOption("--identity <FILE>")]
        [Description("This machine's current identity (FILE.pfx), still valid. Required.")]
        public string? Identity { get; init; }

        [CommandOption("--ca <FILE>")]
        [Description("The federation CA certificate (ca.crt). Required.")]
        public string? Ca { get; init; }

        [CommandOption("--coordinator <URL>")]
        [Description("The coordinator's https URL, e.g. https://coordinator.example.org:7443, or a leader and its standbys separated by commas (tried in order; one that is unavailable or a standby passes the request on to the next). Required.")]
        public string? Coordinator { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.Identity) || !settings.Identity.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException("--identity FILE.pfx is required");
        }
        if (string.IsNullOrWhiteSpace(settings.Ca))
        {
            throw new UsageException("--ca FILE (the federation's ca.crt) is required");
        }
        if (!CoordinatorAddressList.TryParse(settings.Coordinator, out CoordinatorAddressList coordinators, out string addressError))
        {
            throw new UsageException(addressError);
        }
        string output = Path.GetFullPath(settings.Out ?? settings.Identity);
        if (!output.EndsWith(".pfx", StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException("--out FILE must end in .pfx");
        }
        string? password = PasswordFile.Read(settings.PasswordFile);

        using EdgeIdentity identity = EdgeIdentity.Load(settings.Identity, settings.Ca, password);
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        byte[] csr = new CertificateRequest(identity.Certificate.SubjectName, key, HashAlgorithmName.SHA256).CreateSigningRequest();
        RenewResponse response = await RenewAsync(coordinators, identity, csr, cancellationToken);

        using X509Certificate2 issued = X509CertificateLoader.LoadCertificate(response.Certificate.Span);
        // Trust nothing in the answer that we can check: same subject, our new key, a clientAuth chain to the CA.
        if (!issued.SubjectName.RawData.AsSpan().SequenceEqual(identity.Certificate.SubjectName.RawData)
            || !issued.PublicKey.EncodedKeyValue.RawData.AsSpan().SequenceEqual(new PublicKey(key).EncodedKeyValue.RawData))
        {
            throw new CryptographicException("the coordinator returned a certificate for another subject or key");
        }
        if (!identity.Trust(TimeProvider.System).TryBuildChain(issued, FederationTrust.ClientAuthOid, out string reason))
        {
            throw new CryptographicException($"the renewed certificate is not a client identity of this federation: {reason}");
        }
        using X509Certificate2 withKey = issued.CopyWithPrivateKey(key);
        byte[] pkcs12 = withKey.ExportPkcs12(Pkcs12ExportPbeParameters.Pbes2Aes256Sha256, password);
        string temporary = Path.Combine(Path.GetDirectoryName(output)!, $".{Path.GetFileName(output)}.{Guid.NewGuid():N}");
        try
        {
            PkiFiles.WritePrivate(temporary, pkcs12);
            // Renamed over the old file only once complete: a crash leaves the old identity or the new one, never half.
            File.Move(temporary, output, overwrite: true);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(pkcs12);
            if (File.Exists(temporary))
            {
                File.Delete(temporary);
            }
        }

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                name = identity.Name,
                serial = issued.SerialNumber,
                not_after = issued.NotAfter.ToUniversalTime(),
                pfx = output,
            }));
        }
        else
        {
            Console.WriteLine($"renewed '{identity.Name}': serial {issued.SerialNumber}, valid until {issued.NotAfter.ToUniversalTime():u}; written to {output}");
        }
        return CliRunner.Ok;
    }

    /// <summary>
    /// Sends the CSR to the coordinators in order until one answers. Not retried on one coordinator: a retry after a lost
    /// answer would only sign a second certificate for the same key. An UNAVAILABLE answer (a standby, or nothing
    /// listening) moves on to the next; at worst the lost answer's certificate is a second one for this key and name.
    /// A coordinator certificate this client refuses ends it there with one line, as in `run`: a wrong CA is a mistake, not an outage.
    /// </summary>
    private static async Task<RenewResponse> RenewAsync(CoordinatorAddressList coordinators, EdgeIdentity identity, byte[] csr, CancellationToken cancellationToken)
    {
        for (int i = 0; ; i++)
        {
            Uri coordinator = coordinators.Addresses[i];
            string? refused = null;
            try
            {
                using var connection = new CoordinatorConnection(coordinator, identity, new ConnectionOptions { ServerRefused = reason => refused ??= reason });
                var client = new IdentityService.IdentityServiceClient(connection.Channel);
                return await client.RenewAsync(new RenewRequest { Csr = ByteString.CopyFrom(csr) }, connection.Call(cancellationToken));
            }
            catch (Exception e) when (refused is not null && e is Grpc.Core.RpcException or HttpRequestException)
            {
                // Depending on where the handshake broke, the refusal surfaces as an RPC status or as the HTTP exception.
                throw new PermanentConnectionException(
                    $"the coordinator at {coordinator.OriginalString} presented a certificate this client refuses ({refused}); check --ca (the federation's ca.crt) and --coordinator", e);
            }
            catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.Unavailable && i + 1 < coordinators.Addresses.Count)
            {
                Console.Error.WriteLine($"edge-client: coordinator {coordinator.OriginalString} unavailable ({UserMessage.Cause(e)}); trying {coordinators.Addresses[i + 1].OriginalString}");
            }
        }
    }
}
