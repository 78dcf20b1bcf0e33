using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;

namespace Federated.EdgeClient.Transport;

/// <summary>The edge client's credentials: its certificate with private key (NAME.pfx) and the federation CA it trusts (ca.crt).</summary>
public sealed class EdgeIdentity : IDisposable
{
    private EdgeIdentity(X509Certificate2 certificate, X509Certificate2 ca)
    {
        Certificate = certificate;
        Ca = ca;
    }

    public X509Certificate2 Certificate { get; }

    public X509Certificate2 Ca { get; }

    /// <summary>The identity's name (certificate subject common name), which the coordinator also reads.</summary>
    public string Name => Certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);

    /// <summary>Loads and checks the files: the key must be present and the certificate must chain to the CA for client auth.</summary>
    public static EdgeIdentity Load(string pfxPath, string caPath, string? password = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(pfxPath);
        ArgumentException.ThrowIfNullOrEmpty(caPath);
        if (!File.Exists(pfxPath))
        {
            throw new FileNotFoundException($"identity file '{pfxPath}' does not exist");
        }
        if (!File.Exists(caPath))
        {
            throw new FileNotFoundException($"CA certificate '{caPath}' does not exist");
        }
        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadPkcs12FromFile(pfxPath, password);
        }
        catch (CryptographicException ex)
        {
            throw new CryptographicException($"identity file '{pfxPath}' cannot be read (wrong password or not PKCS#12): {ex.Message}", ex);
        }
        X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(caPath);
        var identity = new EdgeIdentity(certificate, ca);
        try
        {
            if (!certificate.HasPrivateKey)
            {
                throw new CryptographicException($"identity file '{pfxPath}' holds no private key");
            }
            if (!new FederationTrust(ca, TimeProvider.System).TryBuildChain(certificate, FederationTrust.ClientAuthOid, out string reason))
            {
                throw new CryptographicException($"identity '{pfxPath}' is not a client identity of this federation: {reason}");
            }
            return identity;
        }
        catch
        {
            identity.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        Certificate.Dispose();
        Ca.Dispose();
    }
}
