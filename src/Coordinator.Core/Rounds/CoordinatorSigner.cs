using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Coordinator.Rounds;

/// <summary>Signs round manifests with the server key; clients verify with the TLS server certificate. Adapters are signed by <see cref="AdapterSigner"/> instead.</summary>
internal sealed class CoordinatorSigner : IDisposable
{
    private readonly ECDsa _key;

    public CoordinatorSigner(X509Certificate2 serverCertificate)
    {
        ArgumentNullException.ThrowIfNull(serverCertificate);
        _key = serverCertificate.GetECDsaPrivateKey() ?? throw new ArgumentException("the server certificate must carry its ECDSA private key", nameof(serverCertificate));
    }

    /// <summary>ECDSA P-256 over SHA-256, IEEE P1363 format, as the protos document.</summary>
    public byte[] Sign(ReadOnlySpan<byte> data) => _key.SignData(data, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);

    public void Dispose() => _key.Dispose();
}
