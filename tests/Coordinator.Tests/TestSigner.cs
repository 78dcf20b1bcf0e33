using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

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
