using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;
using Microsoft.Extensions.Time.Testing;

namespace Federated.Shared.Tests;

public sealed class FederationTrustTests : IDisposable
{
    private readonly TestAuthority _authority = new();
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "federated-trust-" + Guid.NewGuid().ToString("N"));

    public FederationTrustTests() => Directory.CreateDirectory(_directory);

    [Fact]
    public void TryValidateClient_RoleInOuAndExtension_ReturnsNameRoleAndThumbprint()
    {
        using X509Certificate2 officer = _authority.Issue("officer", FederationTrust.ClientAuthOid, FederationRole.Officer);

        bool valid = new FederationTrust(_authority.Ca, TimeProvider.System).TryValidateClient(officer, out FederationIdentity? identity, out string reason);

        Assert.True(valid, reason);
        Assert.Equal(new FederationIdentity("officer", FederationRole.Officer, officer.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256).ToLowerInvariant()), identity);
    }

    [Fact]
    public void TryValidateClient_OuDisagreesWithExtension_RefusedNamingTheRole()
    {
        using X509Certificate2 forged = _authority.Issue("mallory", FederationTrust.ClientAuthOid, FederationRole.Client, organizationalUnit: "officer");

        bool valid = new FederationTrust(_authority.Ca, TimeProvider.System).TryValidateClient(forged, out FederationIdentity? identity, out string reason);

        Assert.False(valid);
        Assert.Null(identity);
        Assert.Contains("carries no valid federation role", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateClient_ServerAuthOnly_RefusedForUsage()
    {
        using X509Certificate2 server = _authority.Issue("server", FederationTrust.ServerAuthOid, FederationRole.Client);

        Assert.False(new FederationTrust(_authority.Ca, TimeProvider.System).TryValidateClient(server, out _, out string reason));
        Assert.Contains("NotValidForUsage", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateClient_OtherFederation_DoesNotChain()
    {
        using var rogue = new TestAuthority("rogue CA");
        using X509Certificate2 mallory = rogue.Issue("mallory", FederationTrust.ClientAuthOid, FederationRole.Client);

        Assert.False(new FederationTrust(_authority.Ca, TimeProvider.System).TryValidateClient(mallory, out _, out string reason));
        Assert.Contains("does not chain to the federation CA", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateClient_RevokedOnTheCrl_RefusedWhileOthersPass()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        using X509Certificate2 bob = _authority.Issue("bob", FederationTrust.ClientAuthOid, FederationRole.Client);
        var trust = new FederationTrust(_authority.Ca, TimeProvider.System, new RevocationCache(Path.Combine(_directory, RevocationList.FileName), _authority.Ca));
        Assert.True(trust.TryValidateClient(alice, out _, out _));

        RevocationList.Revoke(_directory, _authority.CaWithKey, [alice.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);

        Assert.False(trust.TryValidateClient(alice, out _, out string reason));
        Assert.Contains("is revoked", reason, StringComparison.Ordinal);
        Assert.True(trust.TryValidateClient(bob, out _, out _));
    }

    [Fact]
    public void TryBuildChain_CaCertificateItself_RefusedAsNoEndEntity()
    {
        Assert.False(new FederationTrust(_authority.Ca, TimeProvider.System).TryBuildChain(_authority.Ca, FederationTrust.ServerAuthOid, out string reason));
        Assert.Contains("is a CA certificate, not an end-entity identity", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryBuildChain_KeyUsageWithoutDigitalSignature_Refused()
    {
        using X509Certificate2 certificate = _authority.Issue("nosign", FederationTrust.ClientAuthOid, FederationRole.Client, keyUsage: X509KeyUsageFlags.NonRepudiation);

        Assert.False(new FederationTrust(_authority.Ca, TimeProvider.System).TryBuildChain(certificate, FederationTrust.ClientAuthOid, out string reason));
        Assert.Contains("lacks the digitalSignature key usage", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateServer_NoCertificateOrNameMismatch_RefusedWithTheReason()
    {
        var trust = new FederationTrust(_authority.Ca, TimeProvider.System);
        using X509Certificate2 server = _authority.Issue("coordinator.example.org", FederationTrust.ServerAuthOid);

        Assert.False(trust.TryValidateServer(null, SslPolicyErrors.RemoteCertificateNotAvailable, out _, out string none));
        Assert.False(trust.TryValidateServer(server, SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateChainErrors, out X509Certificate2? copy, out string mismatch));

        Assert.Equal("the coordinator presented no certificate", none);
        Assert.Contains("does not name the host connected to", mismatch, StringComparison.Ordinal);
        Assert.Null(copy);
    }

    [Fact]
    public void TryValidateServer_ClientCertificateAsServer_RefusedAsNotFromThisFederation()
    {
        using X509Certificate2 impostor = _authority.Issue("impostor", FederationTrust.ClientAuthOid, FederationRole.Client, loopbackName: true);

        Assert.False(new FederationTrust(_authority.Ca, TimeProvider.System).TryValidateServer(impostor, SslPolicyErrors.RemoteCertificateChainErrors, out _, out string reason));

        Assert.Contains("not from this federation", reason, StringComparison.Ordinal);
        Assert.Contains("NotValidForUsage", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void TryValidateServer_FederationServer_AcceptedDespiteThePlatformsChainErrorWithACopy()
    {
        using X509Certificate2 server = _authority.Issue("localhost", FederationTrust.ServerAuthOid, loopbackName: true);

        bool valid = new FederationTrust(_authority.Ca, TimeProvider.System).TryValidateServer(server, SslPolicyErrors.RemoteCertificateChainErrors, out X509Certificate2? copy, out string reason);

        Assert.True(valid, reason);
        using (copy)
        {
            Assert.Equal(server.RawData, copy!.RawData);
            Assert.False(copy.HasPrivateKey);
        }
    }

    [Fact]
    public void TryValidateServer_RevokedServer_Refused()
    {
        using X509Certificate2 server = _authority.Issue("localhost", FederationTrust.ServerAuthOid, loopbackName: true);
        RevocationList.Revoke(_directory, _authority.CaWithKey, [server.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        var trust = new FederationTrust(_authority.Ca, TimeProvider.System, new RevocationCache(Path.Combine(_directory, RevocationList.FileName), _authority.Ca));

        Assert.False(trust.TryValidateServer(server, SslPolicyErrors.None, out _, out string reason));
        Assert.Contains("is revoked", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void IsExpired_ClockMovedPastNotAfter_TrueNamingTheExpiry()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var trust = new FederationTrust(_authority.Ca, clock);
        Assert.False(trust.IsExpired(alice, out _));

        clock.SetUtcNow(new DateTimeOffset(alice.NotAfter.ToUniversalTime(), TimeSpan.Zero).AddSeconds(1));

        Assert.True(trust.IsExpired(alice, out string reason));
        Assert.Contains("expired at", reason, StringComparison.Ordinal);
        Assert.Contains("alice", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void IsExpired_ClockBeforeNotBefore_True()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        var clock = new FakeTimeProvider(new DateTimeOffset(alice.NotBefore.ToUniversalTime(), TimeSpan.Zero).AddSeconds(-1));

        Assert.True(new FederationTrust(_authority.Ca, clock).IsExpired(alice, out string reason));
        Assert.Contains("not valid before", reason, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        _authority.Dispose();
        Directory.Delete(_directory, recursive: true);
    }
}
