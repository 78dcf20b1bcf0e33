using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Coordinator.Rounds;

/// <summary>Signs what the coordinator vouches for (round manifests) with its server key; clients verify with the TLS server certificate.</summary>
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

    /// <summary>Signs a SHA-256 digest as is (the adapter signature covers the 32-byte digest, per the protos).</summary>
    public byte[] SignHash(ReadOnlySpan<byte> sha256Digest)
    {
        if (sha256Digest.Length != SHA256.HashSizeInBytes)
        {
            throw new ArgumentException($"a SHA-256 digest has {SHA256.HashSizeInBytes} bytes, not {sha256Digest.Length}", nameof(sha256Digest));
        }
        return _key.SignHash(sha256Digest, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }

    public void Dispose() => _key.Dispose();
}
