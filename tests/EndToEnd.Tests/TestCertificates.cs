using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Trust;

namespace Federated.EndToEnd.Tests;

/// <summary>Makes deliberately flawed certificates (validity windows, key usages, names) signed by a test federation CA.</summary>
internal static class TestCertificates
{
    /// <summary>A client-shaped certificate (CN, OU=role and the role extension) with the given flaws, signed by the CA in <paramref name="pkiDirectory"/> or self-signed when null.</summary>
    public static X509Certificate2 Create(
        string? pkiDirectory,
        string name,
        DateTimeOffset notBefore,
        DateTimeOffset notAfter,
        string extendedKeyUsage = FederationTrust.ClientAuthOid,
        X509KeyUsageFlags keyUsage = X509KeyUsageFlags.DigitalSignature,
        string[]? dnsNames = null,
        bool loopbackAddress = false)
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var subject = new X500DistinguishedNameBuilder();
        subject.AddCommonName(name);
        subject.AddOrganizationalUnitName("client");
        subject.AddOrganizationName("Federated");
        var request = new CertificateRequest(subject.Build(), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(keyUsage, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(extendedKeyUsage)], false));
        request.CertificateExtensions.Add(FederationRoleExtension.Create(FederationRole.Client));
        if (dnsNames is not null || loopbackAddress)
        {
            var names = new SubjectAlternativeNameBuilder();
            foreach (string dns in dnsNames ?? [])
            {
                names.AddDnsName(dns);
            }
            if (loopbackAddress)
            {
                names.AddIpAddress(IPAddress.Loopback);
            }
            request.CertificateExtensions.Add(names.Build());
        }
        if (pkiDirectory is null)
        {
            using X509Certificate2 selfSigned = request.CreateSelfSigned(notBefore, notAfter);
            return Reload(selfSigned);
        }
        using X509Certificate2 ca = X509Certificate2.CreateFromPemFile(
            Path.Combine(pkiDirectory, FederationPki.CaCertificateFile), Path.Combine(pkiDirectory, FederationPki.CaKeyFile));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        using ECDsa caKey = ca.GetECDsaPrivateKey()!;
        // The generator overload, unlike Create(issuer, ...), allows windows outside the CA's own (expired, not yet valid).
        using X509Certificate2 issued = request.Create(ca.SubjectName, X509SignatureGenerator.CreateForECDsa(caKey), notBefore, notAfter, serial);
        using X509Certificate2 withKey = issued.CopyWithPrivateKey(key);
        return Reload(withKey);
    }

    /// <summary>Round-trips through PKCS#12 so that the key is usable by SslStream on every platform.</summary>
    private static X509Certificate2 Reload(X509Certificate2 certificate) =>
        X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), password: null);
}
