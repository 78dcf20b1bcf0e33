using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.EdgeClient.Transport;
using Federated.TestKit;
using Federated.Trust;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EdgeClient.Tests;

/// <summary>The edge's kept CRL, with a real federation made by FederationPki and CRLs signed by its CA.</summary>
public sealed class EdgeRevocationListTests : IDisposable
{
    private readonly TempDirectory _home = new();
    private readonly TestFederation _federation;
    private readonly X509Certificate2 _ca;

    public EdgeRevocationListTests()
    {
        _federation = TestFederation.Create(Path.Combine(_home.Path, "pki"), ["alice", "bob", "carol"]);
        _ca = X509CertificateLoader.LoadCertificateFromFile(_federation.CaPath);
    }

    private string KeptPath => _home.File(EdgeRevocationList.FileName);

    [Fact]
    public void Accept_NewerCrl_RevokesAndIsKeptAcrossAReopen()
    {
        byte[] first = _federation.Revoke("bob");
        using X509Certificate2 bob = _federation.Certificate("bob");
        using X509Certificate2 alice = _federation.Certificate("alice");
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);

        Assert.Null(list.Accept(first));

        Assert.True(list.IsRefused(bob, out string reason));
        Assert.Contains("revoked by CRL number 1", reason, StringComparison.Ordinal);
        Assert.False(list.IsRefused(alice, out _));
        EdgeRevocationList reopened = EdgeRevocationList.Open(KeptPath, _ca);
        Assert.Equal(BigInteger.One, reopened.Number);
        Assert.True(reopened.IsRefused(bob, out _));
    }

    [Fact]
    public void Accept_OlderCrlAfterANewer_RefusedAsCrlRollbackAndTheNewerStays()
    {
        byte[] first = _federation.Revoke("bob");
        byte[] second = _federation.Revoke("carol");
        using X509Certificate2 carol = _federation.Certificate("carol");
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);
        Assert.Null(list.Accept(second));

        RevocationRefusal? refusal = list.Accept(first);

        Assert.Equal(EdgeRevocationList.RollbackRule, refusal?.Rule);
        Assert.Contains("CRL number 1 is older than number 2", refusal!.Message, StringComparison.Ordinal);
        Assert.True(list.IsRefused(carol, out _));
        Assert.Equal(new BigInteger(2), EdgeRevocationList.Open(KeptPath, _ca).Number);
    }

    [Fact]
    public void Accept_OlderCrlAfterARestart_StillCrlRollback()
    {
        byte[] first = _federation.Revoke("bob");
        byte[] second = _federation.Revoke("carol");
        Assert.Null(EdgeRevocationList.Open(KeptPath, _ca).Accept(second));

        RevocationRefusal? refusal = EdgeRevocationList.Open(KeptPath, _ca).Accept(first);

        Assert.Equal(EdgeRevocationList.RollbackRule, refusal?.Rule);
    }

    [Fact]
    public void Accept_NoCrlBeforeAnyWasSeen_Accepted()
    {
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);

        Assert.Null(list.Accept([]));
        Assert.Null(list.Number);
        Assert.False(File.Exists(KeptPath));
    }

    [Fact]
    public void Accept_NoCrlAfterOneWasSeen_RefusedAsCrlMissing()
    {
        byte[] first = _federation.Revoke("bob");
        EdgeRevocationList.Open(KeptPath, _ca).Accept(first);

        RevocationRefusal? refusal = EdgeRevocationList.Open(KeptPath, _ca).Accept([]);

        Assert.Equal(EdgeRevocationList.MissingRule, refusal?.Rule);
        Assert.Contains("has seen CRL number 1", refusal!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Accept_OneBitChangedOrAnotherFederationsCrl_RefusedAsCrlInvalidAndNothingKept()
    {
        byte[] first = _federation.Revoke("bob");
        byte[] tampered = (byte[])first.Clone();
        tampered[first.Length / 2] ^= 1;
        using var rogueHome = new TempDirectory();
        TestFederation rogue = TestFederation.Create(rogueHome.Path, ["bob"]);
        byte[] foreign = rogue.Revoke("bob");
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);

        Assert.Equal(EdgeRevocationList.InvalidRule, list.Accept(tampered)?.Rule);
        RevocationRefusal? other = list.Accept(foreign);

        Assert.Equal(EdgeRevocationList.InvalidRule, other?.Rule);
        Assert.Contains("does not verify against the federation CA", other!.Message, StringComparison.Ordinal);
        Assert.Null(list.Number);
        Assert.False(File.Exists(KeptPath));
    }

    [Fact]
    public void Accept_CrlSignedByTheRenewalIntermediate_RefusedAsCrlInvalidAndNothingKept()
    {
        // The coordinator holds the intermediate's key; a CRL from it (even one naming the root as issuer) must not
        // replace the root's, or a compromised coordinator could un-revoke anyone.
        using X509Certificate2 intermediate = X509Certificate2.CreateFromPemFile(
            Path.Combine(_federation.Directory, "intermediate.crt"), Path.Combine(_federation.Directory, "intermediate.key"));
        using ECDsa key = intermediate.GetECDsaPrivateKey()!;
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);

        foreach (X500DistinguishedName issuer in new[] { _ca.SubjectName, intermediate.SubjectName })
        {
            byte[] crl = new CertificateRevocationListBuilder().Build(issuer, X509SignatureGenerator.CreateForECDsa(key), new BigInteger(7), DateTimeOffset.UtcNow.AddDays(1),
                HashAlgorithmName.SHA256, X509AuthorityKeyIdentifierExtension.CreateFromCertificate(intermediate, true, false), DateTimeOffset.UtcNow);

            Assert.Equal(EdgeRevocationList.InvalidRule, list.Accept(crl)?.Rule);
        }
        Assert.Null(list.Number);
        Assert.False(File.Exists(KeptPath));
    }

    [Fact]
    public void Accept_SameNumberDifferentList_RefusedAsCrlRollback()
    {
        byte[] first = _federation.Revoke("bob");
        using X509Certificate2 ca = X509Certificate2.CreateFromPemFile(_federation.CaPath, Path.Combine(_federation.Directory, "ca.key"));
        byte[] sameNumber = new CertificateRevocationListBuilder().Build(ca, BigInteger.One, DateTimeOffset.UtcNow.AddDays(1), HashAlgorithmName.SHA256);
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);
        Assert.Null(list.Accept(first));
        Assert.Null(list.Accept(first));

        Assert.Equal(EdgeRevocationList.RollbackRule, list.Accept(sameNumber)?.Rule);
    }

    [Fact]
    public void Open_KeptFileChanged_RefusedNotIgnored()
    {
        EdgeRevocationList.Open(KeptPath, _ca).Accept(_federation.Revoke("bob"));
        string pem = File.ReadAllText(KeptPath);
        File.WriteAllText(KeptPath, pem.Replace(pem[40..44], "AAAA", StringComparison.Ordinal));

        var ex = Assert.Throws<CryptographicException>(() => EdgeRevocationList.Open(KeptPath, _ca));

        Assert.Contains(KeptPath, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CoordinatorRefusal_ServerCertificateExpiresWhileConnected_CertificateExpired()
    {
        using X509Certificate2 server = _federation.Certificate(TestFederation.ServerName);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var trust = new FederationTrust(_ca, clock, EdgeRevocationList.Open(KeptPath, _ca));
        Assert.Null(CoordinatorConnection.CoordinatorRefusal(trust, server));

        clock.SetUtcNow(new DateTimeOffset(server.NotAfter.ToUniversalTime(), TimeSpan.Zero).AddMinutes(1));

        CoordinatorRefusedException? refused = CoordinatorConnection.CoordinatorRefusal(trust, server);
        Assert.Equal(EdgeRevocationList.ExpiredRule, refused?.Rule);
        Assert.Contains("expired at", refused!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CoordinatorRefusal_ServerCertificateOnTheNewestCrl_CertificateRevoked()
    {
        using X509Certificate2 server = _federation.Certificate(TestFederation.ServerName);
        EdgeRevocationList list = EdgeRevocationList.Open(KeptPath, _ca);
        var trust = new FederationTrust(_ca, TimeProvider.System, list);
        Assert.Null(CoordinatorConnection.CoordinatorRefusal(trust, server));

        Assert.Null(list.Accept(_federation.Revoke(TestFederation.ServerName)));

        Assert.Equal(EdgeRevocationList.RevokedRule, CoordinatorConnection.CoordinatorRefusal(trust, server)?.Rule);
    }

    public void Dispose()
    {
        _ca.Dispose();
        _home.Dispose();
    }
}
