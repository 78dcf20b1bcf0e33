using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;

namespace Federated.Shared.Tests;

public sealed class RevocationCacheTests : IDisposable
{
    private readonly TestAuthority _authority = new();
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "federated-crl-" + Guid.NewGuid().ToString("N"));

    public RevocationCacheTests() => Directory.CreateDirectory(_directory);

    private string CrlPath => Path.Combine(_directory, RevocationList.FileName);

    [Fact]
    public void IsRefused_CrlDeletedAfterItWasLoaded_RefusesEveryoneInsteadOfClearingTheRevocations()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        using X509Certificate2 bob = _authority.Issue("bob", FederationTrust.ClientAuthOid, FederationRole.Client);
        RevocationList.Revoke(_directory, _authority.CaWithKey, [alice.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        var cache = new RevocationCache(CrlPath, _authority.Ca);
        Assert.True(cache.IsRefused(alice, out _));
        Assert.False(cache.IsRefused(bob, out _));

        File.Delete(CrlPath);

        Assert.True(cache.IsRefused(alice, out string reason));
        Assert.True(cache.IsRefused(bob, out _));
        Assert.Contains("removed after CRL number 1 was loaded", reason, StringComparison.Ordinal);
        Assert.Empty(cache.CurrentDer());
    }

    [Fact]
    public void IsRefused_OlderCrlPutBack_RefusesEveryoneNamingTheRollback()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        using X509Certificate2 bob = _authority.Issue("bob", FederationTrust.ClientAuthOid, FederationRole.Client);
        RevocationList.Revoke(_directory, _authority.CaWithKey, [alice.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        string first = File.ReadAllText(CrlPath);
        var cache = new RevocationCache(CrlPath, _authority.Ca);
        RevocationList.Revoke(_directory, _authority.CaWithKey, [bob.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        Assert.True(cache.IsRefused(bob, out _));

        File.Delete(CrlPath);
        File.WriteAllText(CrlPath, first + "\n"); // a different length, as a restored backup would have

        Assert.True(cache.IsRefused(bob, out string reason));
        Assert.Contains("CRL number 1 is older than number 2", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void CurrentDer_VerifiedCrl_IsTheFilesListWithItsNumber()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        var cache = new RevocationCache(CrlPath, _authority.Ca);
        Assert.Empty(cache.CurrentDer());
        RevocationList.Revoke(_directory, _authority.CaWithKey, [alice.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);

        byte[] der = cache.CurrentDer();

        IReadOnlySet<BigInteger> revoked = RevocationList.ReadVerifiedDer(der, _authority.Ca, out BigInteger number);
        Assert.Equal(BigInteger.One, number);
        Assert.Contains(RevocationList.Serial(alice.SerialNumberBytes.Span), revoked);
    }

    [Fact]
    public void ReadVerifiedDer_OneBitChangedOrOtherCa_Refused()
    {
        using X509Certificate2 alice = _authority.Issue("alice", FederationTrust.ClientAuthOid, FederationRole.Client);
        RevocationList.Revoke(_directory, _authority.CaWithKey, [alice.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        RevocationList.ReadVerified(File.ReadAllText(CrlPath), _authority.Ca, out _, out byte[] der);
        using var rogue = new TestAuthority("rogue CA");
        byte[] tampered = (byte[])der.Clone();
        tampered[der.Length / 3] ^= 1;

        Assert.ThrowsAny<CryptographicException>(() => RevocationList.ReadVerifiedDer(tampered, _authority.Ca, out _));
        var other = Assert.ThrowsAny<CryptographicException>(() => RevocationList.ReadVerifiedDer(der, rogue.Ca, out _));
        Assert.Contains("does not verify against the federation CA", other.Message, StringComparison.Ordinal);
        Assert.ThrowsAny<CryptographicException>(() => RevocationList.ReadVerifiedDer([.. der, 0], _authority.Ca, out _));
    }

    public void Dispose()
    {
        _authority.Dispose();
        Directory.Delete(_directory, recursive: true);
    }
}
