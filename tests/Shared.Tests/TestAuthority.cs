using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;

namespace Federated.Shared.Tests;

/// <summary>A throwaway federation CA with its key in memory, issuing certificates shaped like the PKI's (or deliberately not).</summary>
internal sealed class TestAuthority : IDisposable
{
    private readonly ECDsa _key = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public TestAuthority(string name = "test federation CA")
    {
        var request = new CertificateRequest($"CN={name}, O=Federated", _key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        CaWithKey = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(30));
        Ca = X509CertificateLoader.LoadCertificate(CaWithKey.RawData);
    }

    /// <summary>The CA certificate as clients hold it (no key).</summary>
    public X509Certificate2 Ca { get; }

    public X509Certificate2 CaWithKey { get; }

    /// <summary>An end-entity certificate with its key: CN, optionally OU and the role extension, one EKU, the given key usage.</summary>
    public X509Certificate2 Issue(string name, string extendedKeyUsage, FederationRole? role = null, string? organizationalUnit = null,
        X509KeyUsageFlags keyUsage = X509KeyUsageFlags.DigitalSignature, bool loopbackName = false)
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var subject = new X500DistinguishedNameBuilder();
        subject.AddCommonName(name);
        string? ou = organizationalUnit ?? (role is { } r ? FederationRoleExtension.Name(r) : null);
        if (ou is not null)
        {
            subject.AddOrganizationalUnitName(ou);
        }
        var request = new CertificateRequest(subject.Build(), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(keyUsage, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(extendedKeyUsage)], false));
        if (role is { } extension)
        {
            request.CertificateExtensions.Add(FederationRoleExtension.Create(extension));
        }
        if (loopbackName)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(names.Build());
        }
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        using X509Certificate2 issued = request.Create(CaWithKey, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), serial);
        using X509Certificate2 withKey = issued.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), password: null);
    }

    public void Dispose()
    {
        Ca.Dispose();
        CaWithKey.Dispose();
        _key.Dispose();
    }
}
