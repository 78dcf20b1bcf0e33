using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;

namespace Federated.EdgeClient.Transport;

/// <summary>The edge client's credentials: its certificate with private key (NAME.pfx) and the federation CA it trusts (ca.crt).</summary>
public sealed class EdgeIdentity : IDisposable
{
    private readonly FederationCaBundle _bundle;

    private EdgeIdentity(X509Certificate2 certificate, FederationCaBundle bundle)
    {
        Certificate = certificate;
        _bundle = bundle;
    }

    public X509Certificate2 Certificate { get; }

    /// <summary>The federation root, the only trust anchor.</summary>
    public X509Certificate2 Ca => _bundle.Root;

    /// <summary>The renewal intermediates of ca.crt, through which renewed client certificates (its own, its peers') chain.</summary>
    public IReadOnlyList<X509Certificate2> Intermediates => _bundle.Intermediates;

    /// <summary>The trust decision for this identity's federation (root, intermediates) with the given clock and revocation.</summary>
    public FederationTrust Trust(TimeProvider time, IRevocationCheck? revocation = null) => new(Ca, time, revocation, Intermediates);

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
        FederationCaBundle bundle;
        try
        {
            bundle = FederationCaBundle.Load(caPath);
        }
        catch
        {
            certificate.Dispose();
            throw;
        }
        var identity = new EdgeIdentity(certificate, bundle);
        try
        {
            if (!certificate.HasPrivateKey)
            {
                throw new CryptographicException($"identity file '{pfxPath}' holds no private key");
            }
            if (!identity.Trust(TimeProvider.System).TryBuildChain(certificate, FederationTrust.ClientAuthOid, out string reason))
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
        _bundle.Dispose();
    }
}
