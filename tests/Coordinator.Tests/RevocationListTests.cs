using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Tests.Cli;
using Federated.Trust;

namespace Federated.Coordinator.Tests;

public sealed class RevocationListTests
{
    [Fact]
    public async Task RevokeCommand_IdentityIssuedElsewhere_OnlyItsCertificatesRefused()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "issue", "--ca", pki, "--name", "hospital-a", "--role", "client", "--out", dir.File("ids/hospital-a.pfx")));
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(pki, "ca.crt"));
        using X509Certificate2 hospital = X509CertificateLoader.LoadPkcs12FromFile(dir.File("ids/hospital-a.pfx"), null);
        using X509Certificate2 engineer = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "engineer.pfx"), null);
        var cache = new RevocationCache(Path.Combine(pki, RevocationList.FileName), ca);
        Assert.False(cache.IsRefused(hospital, out _));

        int code = await CoordinatorCli.Run("pki", "revoke", "--name", "hospital-a", "--pki", pki);
        int again = await CoordinatorCli.Run("pki", "revoke", "--name", "engineer", "--pki", pki);

        Assert.Equal((CliRunner.Ok, CliRunner.Ok), (code, again));
        IReadOnlySet<System.Numerics.BigInteger> revoked = RevocationList.ReadVerified(
            File.ReadAllText(Path.Combine(pki, RevocationList.FileName)), ca, out System.Numerics.BigInteger number, out _);
        Assert.Equal(2, revoked.Count); // the second revocation kept the first
        Assert.Equal(2, (int)number);
        Assert.True(cache.IsRefused(hospital, out string reason));
        Assert.Contains("is revoked", reason, StringComparison.Ordinal);
        Assert.True(cache.IsRefused(engineer, out _));
        using X509Certificate2 officer = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "officer.pfx"), null);
        Assert.False(cache.IsRefused(officer, out _));
    }

    [Fact]
    public async Task RevokeCommand_UnknownNameOrBadName_FailsWithoutWritingACrl()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);

        int unknown = await CoordinatorCli.Run("pki", "revoke", "--name", "nobody", "--pki", pki);
        int invalid = await CoordinatorCli.Run("pki", "revoke", "--name", "../ca", "--pki", pki);

        Assert.Equal((CliRunner.Failed, CliRunner.BadUsage), (unknown, invalid));
        Assert.False(File.Exists(Path.Combine(pki, RevocationList.FileName)));
    }

    public static TheoryData<string> Forgeries => ["flipped-byte", "other-ca"];

    [Theory]
    [MemberData(nameof(Forgeries))]
    public void IsRefused_CrlNotSignedByTheCa_FailsClosedForEveryone(string forgery)
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki");
        string rogue = dir.File("rogue");
        using (FederationPki federation = FederationPki.CreateCa(pki, TimeProvider.System))
        {
            federation.IssueIdentity(pki, "alice", FederationRole.Client, null);
            federation.IssueIdentity(pki, "bob", FederationRole.Client, null);
            federation.Revoke("bob");
        }
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(pki, "ca.crt"));
        using X509Certificate2 alice = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "alice.pfx"), null);
        string crlPath = Path.Combine(pki, RevocationList.FileName);
        var cache = new RevocationCache(crlPath, ca);
        Assert.False(cache.IsRefused(alice, out _));

        if (forgery == "flipped-byte")
        {
            // An attacker who can write the file edits it to un-revoke bob; the signature no longer verifies.
            PemFields fields = PemEncoding.Find(File.ReadAllText(crlPath));
            byte[] der = Convert.FromBase64String(File.ReadAllText(crlPath)[fields.Base64Data]);
            der[der.Length / 2] ^= 0x01;
            File.WriteAllText(crlPath, PemEncoding.WriteString("X509 CRL", der));
        }
        else
        {
            using FederationPki other = FederationPki.CreateCa(rogue, TimeProvider.System);
            other.IssueIdentity(rogue, "carol", FederationRole.Client, null);
            other.Revoke("carol");
            File.Copy(Path.Combine(rogue, RevocationList.FileName), crlPath, overwrite: true);
            File.SetLastWriteTimeUtc(crlPath, DateTime.UtcNow.AddSeconds(5));
        }

        Assert.True(cache.IsRefused(alice, out string reason));
        Assert.Contains("cannot be trusted", reason, StringComparison.Ordinal);
    }
}
