using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;

namespace Federated.Coordinator.Tests;

/// <summary>A throwaway ECDSA P-256 certificate with its key, standing in for the coordinator's server certificate.</summary>
internal static class TestSigner
{
    public static X509Certificate2 Create(string name = "coordinator")
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1));
    }
}

/// <summary>A federation CA with the coordinator's adapter signer issued under it, in a test's folder.</summary>
internal static class TestAdapterSigner
{
    /// <summary>Writes the CA and adapter-signer.pfx into <paramref name="pki"/>; returns the CA certificate and the loaded signer.</summary>
    public static (X509Certificate2 Ca, AdapterSigner Signer) Create(string pki)
    {
        using (FederationPki authority = FederationPki.CreateCa(pki, TimeProvider.System))
        {
            authority.IssueAdapterSigner(pki, password: null);
        }
        X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(pki, FederationPki.CaCertificateFile));
        return (ca, new AdapterSigner(X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, FederationPki.AdapterSignerName + ".pfx"), null), ca));
    }
}
