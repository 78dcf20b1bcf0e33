using System.Net.Security;
using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Training.Provenance;
using Federated.Trust;

namespace Federated.Shared.Tests;

/// <summary>
/// Chains through the coordinator's renewal intermediate: a client identity with clientAuth alone is accepted; a
/// server, adapter signer, CA or serverAuth client from it, a chain below a CA under it, an intermediate outside its
/// profile and a CRL it signed are refused by the federation's own checks.
/// </summary>
public sealed class RenewalIntermediateTests : IDisposable
{
    private readonly Authority _root;
    private readonly Authority _intermediate;
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "federated-intermediate-" + Guid.NewGuid().ToString("N"));

    public RenewalIntermediateTests()
    {
        Directory.CreateDirectory(_directory);
        // No path length on this test root, so that only the federation's own rules stand between a CA below the
        // intermediate and acceptance.
        _root = Authority.SelfSigned("CN=test root, O=Federated");
        _intermediate = _root.Intermediate("CN=test renewal intermediate, O=Federated", pathLength: 0, FederationTrust.ClientAuthOid, X509KeyUsageFlags.KeyCertSign);
    }

    private FederationTrust Trust(params X509Certificate2[] intermediates) => new(_root.Certificate, TimeProvider.System, revocation: null, intermediates);

    [Fact]
    public void TryValidateClient_ClientAuthOnlyThroughIntermediate_AcceptedWithItsRole()
    {
        using X509Certificate2 renewed = _intermediate.Leaf("carol", [FederationTrust.ClientAuthOid], FederationRole.Client);

        bool valid = Trust(_intermediate.Certificate).TryValidateClient(renewed, out FederationIdentity? identity, out string reason);

        Assert.True(valid, reason);
        Assert.Equal("carol", identity!.Name);
        Assert.Equal(FederationRole.Client, identity.Role);
    }

    [Fact]
    public void TryValidateClient_IntermediateRevokedByTheRoot_EverythingItSignedRefused()
    {
        using X509Certificate2 renewed = _intermediate.Leaf("carol", [FederationTrust.ClientAuthOid], FederationRole.Client);
        using X509Certificate2 rootWithKey = _root.Certificate.CopyWithPrivateKey(_root.Key);
        RevocationList.Revoke(_directory, rootWithKey, [_intermediate.Certificate.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        var revocation = new RevocationCache(Path.Combine(_directory, RevocationList.FileName), _root.Certificate);

        bool valid = new FederationTrust(_root.Certificate, TimeProvider.System, revocation, [_intermediate.Certificate]).TryValidateClient(renewed, out _, out string reason);

        Assert.False(valid);
        Assert.Contains("revoked intermediate", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateClient_IntermediateNotInTheTrustFile_Refused()
    {
        using X509Certificate2 renewed = _intermediate.Leaf("carol", [FederationTrust.ClientAuthOid], FederationRole.Client);

        Assert.False(Trust().TryValidateClient(renewed, out _, out _));
    }

    [Fact]
    public void TryValidateClient_ClientCertificateWithServerAuthFromIntermediate_Refused()
    {
        using X509Certificate2 both = _intermediate.Leaf("carol", [FederationTrust.ClientAuthOid, FederationTrust.ServerAuthOid], FederationRole.Client);

        Assert.False(Trust(_intermediate.Certificate).TryValidateClient(both, out _, out string reason));
        Assert.Contains("renewal intermediate", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateServer_ServerCertificateFromIntermediate_Refused()
    {
        using X509Certificate2 server = _intermediate.Leaf("localhost", [FederationTrust.ServerAuthOid], role: null);

        Assert.False(Trust(_intermediate.Certificate).TryValidateServer(server, SslPolicyErrors.RemoteCertificateChainErrors, out X509Certificate2? copy, out _));
        Assert.Null(copy);
        Assert.False(Trust(_intermediate.Certificate).TryBuildChain(server, FederationTrust.ServerAuthOid, out _));
    }

    [Fact]
    public void TryBuildChain_AdapterSignerFromIntermediate_Refused()
    {
        using X509Certificate2 signer = _intermediate.Leaf("adapter signer", [FederationTrust.CodeSigningOid], role: null);

        Assert.False(Trust(_intermediate.Certificate).TryBuildChain(signer, FederationTrust.CodeSigningOid, out _));
    }

    [Fact]
    public void AdapterSignature_SignerFromIntermediateWithTheIntermediateInTheCms_Refused()
    {
        using X509Certificate2 signer = _intermediate.Leaf("adapter signer", [FederationTrust.CodeSigningOid], role: null);
        byte[] adapter = RandomNumberGenerator.GetBytes(64);
        byte[] signature = AdapterSignature.SignFile(adapter, "adapter_model.safetensors", signer, [_intermediate.Certificate]);

        var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.VerifyFile(adapter, "adapter_model.safetensors", signature, _root.Certificate));

        Assert.Contains("not issued by the federation root directly", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TryBuildChain_CaCertificateFromIntermediate_Refused()
    {
        using Authority below = _intermediate.Intermediate("CN=below, O=Federated", pathLength: 0, FederationTrust.ClientAuthOid, X509KeyUsageFlags.KeyCertSign);

        Assert.False(Trust(_intermediate.Certificate).TryBuildChain(below.Certificate, FederationTrust.ClientAuthOid, out string reason));
        Assert.Contains("CA certificate", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateClient_ClientBelowACaUnderTheIntermediate_RefusedForPathLength()
    {
        using Authority below = _intermediate.Intermediate("CN=below, O=Federated", pathLength: 0, FederationTrust.ClientAuthOid, X509KeyUsageFlags.KeyCertSign);
        using X509Certificate2 client = below.Leaf("mallory", [FederationTrust.ClientAuthOid], FederationRole.Client);

        Assert.False(Trust(_intermediate.Certificate, below.Certificate).TryValidateClient(client, out _, out _));
    }

    [Fact]
    public void TryValidateClient_IntermediateWithoutPathLengthZero_Refused()
    {
        // The platform accepts this chain (the root sets no path length); the federation's profile check does not.
        using Authority loose = _root.Intermediate("CN=loose, O=Federated", pathLength: null, FederationTrust.ClientAuthOid, X509KeyUsageFlags.KeyCertSign);
        using X509Certificate2 client = loose.Leaf("mallory", [FederationTrust.ClientAuthOid], FederationRole.Client);

        Assert.False(Trust(loose.Certificate).TryValidateClient(client, out _, out string reason));
        Assert.Contains("not a constrained renewal intermediate", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateClient_IntermediateAllowingServerAuth_Refused()
    {
        using Authority wide = _root.Intermediate("CN=wide, O=Federated", pathLength: 0, FederationTrust.ServerAuthOid, X509KeyUsageFlags.KeyCertSign, FederationTrust.ClientAuthOid);
        using X509Certificate2 client = wide.Leaf("mallory", [FederationTrust.ClientAuthOid], FederationRole.Client);

        Assert.False(Trust(wide.Certificate).TryValidateClient(client, out _, out _));
    }

    [Fact]
    public void Load_TrustFileWithRootAndConstrainedIntermediate_BothRead()
    {
        string path = Path.Combine(_directory, "ca.crt");
        File.WriteAllText(path, _root.Certificate.ExportCertificatePem() + "\n" + _intermediate.Certificate.ExportCertificatePem() + "\n");

        using FederationCaBundle bundle = FederationCaBundle.Load(path);

        Assert.Equal(_root.Certificate.RawData, bundle.Root.RawData);
        Assert.Equal(_intermediate.Certificate.RawData, Assert.Single(bundle.Intermediates).RawData);
    }

    [Fact]
    public void Load_TrustFileWithIntermediateThatMaySignCrls_Refused()
    {
        using Authority crlSigner = _root.Intermediate("CN=crl signer, O=Federated", pathLength: 0, FederationTrust.ClientAuthOid, X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign);
        string path = Path.Combine(_directory, "ca.crt");
        File.WriteAllText(path, _root.Certificate.ExportCertificatePem() + "\n" + crlSigner.Certificate.ExportCertificatePem() + "\n");

        var ex = Assert.Throws<CryptographicException>(() => FederationCaBundle.Load(path));

        Assert.Contains("cRLSign", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_TrustFileStartingWithTheIntermediate_Refused()
    {
        string path = Path.Combine(_directory, "ca.crt");
        File.WriteAllText(path, _intermediate.Certificate.ExportCertificatePem() + "\n" + _root.Certificate.ExportCertificatePem() + "\n");

        Assert.Throws<CryptographicException>(() => FederationCaBundle.Load(path));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ReadVerified_CrlSignedByTheIntermediate_Refused(bool claimsRootAsIssuer)
    {
        X500DistinguishedName issuer = claimsRootAsIssuer ? _root.Certificate.SubjectName : _intermediate.Certificate.SubjectName;
        var builder = new CertificateRevocationListBuilder();
        builder.AddEntry([0x01, 0x02, 0x03], DateTimeOffset.UtcNow);
        byte[] der = builder.Build(issuer, X509SignatureGenerator.CreateForECDsa(_intermediate.Key), BigInteger.One, DateTimeOffset.UtcNow.AddDays(7),
            HashAlgorithmName.SHA256, X509AuthorityKeyIdentifierExtension.CreateFromCertificate(_intermediate.Certificate, true, false), DateTimeOffset.UtcNow);

        Assert.Throws<CryptographicException>(() => RevocationList.ReadVerified(RevocationList.ToPem(der), _root.Certificate, out _, out _));
    }

    public void Dispose()
    {
        _intermediate.Dispose();
        _root.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>A CA with its key in memory, issuing CA and end-entity certificates of any shape the tests need.</summary>
    private sealed class Authority(X509Certificate2 certificate, ECDsa key) : IDisposable
    {
        public X509Certificate2 Certificate { get; } = certificate;

        public ECDsa Key { get; } = key;

        public static Authority SelfSigned(string subject)
        {
            var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            using X509Certificate2 withKey = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddHours(-1), DateTimeOffset.UtcNow.AddDays(30));
            return new Authority(X509CertificateLoader.LoadCertificate(withKey.RawData), key);
        }

        public Authority Intermediate(string subject, int? pathLength, string extendedKeyUsage, X509KeyUsageFlags usage, string? secondUsage = null)
        {
            var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, pathLength is not null, pathLength ?? 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(usage, true));
            OidCollection usages = [new Oid(extendedKeyUsage)];
            if (secondUsage is not null)
            {
                usages.Add(new Oid(secondUsage));
            }
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, false));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            return new Authority(Sign(request), key);
        }

        public X509Certificate2 Leaf(string name, string[] extendedKeyUsages, FederationRole? role)
        {
            using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var subject = new X500DistinguishedNameBuilder();
            subject.AddCommonName(name);
            if (role is { } r)
            {
                subject.AddOrganizationalUnitName(FederationRoleExtension.Name(r));
            }
            var request = new CertificateRequest(subject.Build(), key, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
            OidCollection usages = [];
            foreach (string oid in extendedKeyUsages)
            {
                usages.Add(new Oid(oid));
            }
            request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, false));
            if (role is { } extension)
            {
                request.CertificateExtensions.Add(FederationRoleExtension.Create(extension));
            }
            using X509Certificate2 issued = Sign(request);
            using X509Certificate2 withKey = issued.CopyWithPrivateKey(key);
            return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), password: null);
        }

        private X509Certificate2 Sign(CertificateRequest request)
        {
            request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Certificate, true, false));
            byte[] serial = RandomNumberGenerator.GetBytes(16);
            serial[0] &= 0x7F;
            return request.Create(Certificate.SubjectName, X509SignatureGenerator.CreateForECDsa(Key), DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), serial);
        }

        public void Dispose()
        {
            Certificate.Dispose();
            Key.Dispose();
        }
    }
}
