using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Tests.Cli;
using Federated.Trust;

namespace Federated.Coordinator.Tests;

// Owner-only file modes are a Unix property; the project runs its services on Linux.
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PkiCommandTests
{
    [Fact]
    public async Task Init_NewFolder_WritesCaServerEngineerOfficerWithOwnerOnlyKeys()
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki");

        int code = await CoordinatorCli.Run("pki", "init", "--out", pki, "--host", "coord.example.org", "--host", "10.1.2.3");

        Assert.Equal(CliRunner.Ok, code);
        foreach (string name in new[] { "server", "engineer", "officer" })
        {
            foreach (string ext in new[] { ".pfx", ".crt", ".key" })
            {
                Assert.True(File.Exists(Path.Combine(pki, name + ext)), name + ext);
            }
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(pki, name + ".key")));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(pki, name + ".pfx")));
        }
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(pki, "ca.key")));

        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(pki, "ca.crt"));
        var basic = Assert.IsType<X509BasicConstraintsExtension>(ca.Extensions["2.5.29.19"]);
        Assert.True(basic.CertificateAuthority);
        var usage = Assert.IsType<X509KeyUsageExtension>(ca.Extensions["2.5.29.15"]);
        Assert.Equal(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, usage.KeyUsages);
        Assert.Equal("1.2.840.10045.2.1", ca.PublicKey.Oid.Value); // id-ecPublicKey
        using (ECDsa? caKey = ca.GetECDsaPublicKey())
        {
            Assert.Equal(256, caKey!.KeySize);
        }

        using X509Certificate2 server = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "server.pfx"), null);
        var names = Assert.IsType<X509SubjectAlternativeNameExtension>(server.Extensions["2.5.29.17"]);
        Assert.Equal(["localhost", "coord.example.org"], names.EnumerateDnsNames());
        Assert.Equal(["127.0.0.1", "::1", "10.1.2.3"], names.EnumerateIPAddresses().Select(a => a.ToString()));
        var trust = new FederationTrust(ca, TimeProvider.System);
        Assert.True(trust.TryBuildChain(server, FederationTrust.ServerAuthOid, out _));
        Assert.False(trust.TryBuildChain(server, FederationTrust.ClientAuthOid, out _));

        using X509Certificate2 officer = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "officer.pfx"), null);
        Assert.True(trust.TryValidateClient(officer, out FederationIdentity? identity, out string reason), reason);
        Assert.Equal(new FederationIdentity("officer", FederationRole.Officer, identity!.CertificateSha256), identity);
    }

    [Fact]
    public async Task Init_NewFolder_WritesACodeSigningAdapterSignerWhoseSignaturesVerify()
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki");

        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "init", "--out", pki));

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(pki, "adapter-signer.pfx")));
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(pki, "ca.crt"));
        using X509Certificate2 signer = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "adapter-signer.pfx"), null);
        var usages = Assert.IsType<X509EnhancedKeyUsageExtension>(signer.Extensions["2.5.29.37"]);
        Assert.Equal(["1.3.6.1.5.5.7.3.3"], usages.EnhancedKeyUsages.Cast<Oid>().Select(o => o.Value));
        byte[] blob = RandomNumberGenerator.GetBytes(100);
        byte[] signature = Training.Provenance.AdapterSignature.SignFile(blob, "adapter_model.safetensors", signer);
        using X509Certificate2 verified = Training.Provenance.AdapterSignature.VerifyFile(blob, "adapter_model.safetensors", signature, ca);
        Assert.Equal(signer.Thumbprint, verified.Thumbprint);
        // A code-signing certificate is no TLS identity.
        var trust = new FederationTrust(ca, TimeProvider.System);
        Assert.False(trust.TryValidateClient(signer, out _, out _));
        Assert.False(trust.TryBuildChain(signer, FederationTrust.ServerAuthOid, out _));
    }

    [Fact]
    public async Task Issue_ClientRole_WritesPfxPemAndCaBesideOut()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        string password = dir.File("password.txt");
        File.WriteAllText(password, "correct horse\n");
        string outDir = dir.File("alice");

        int code = await CoordinatorCli.Run("pki", "issue", "--pki", pki, "--name", "alice", "--role", "client", "--out", Path.Combine(outDir, "alice.pfx"), "--password-file", password);

        Assert.Equal(CliRunner.Ok, code);
        Assert.True(File.Exists(Path.Combine(outDir, "ca.crt")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(outDir, "alice.key")));
        Assert.Throws<CryptographicException>(() => X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(outDir, "alice.pfx"), null));
        using X509Certificate2 alice = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(outDir, "alice.pfx"), "correct horse");
        Assert.True(alice.HasPrivateKey);
        Assert.Equal(FederationRole.Client, FederationRoleExtension.Read(alice));

        // The PEM pair is the same identity for other TLS stacks, and its key is under the same password as the .pfx.
        Assert.Contains("BEGIN ENCRYPTED PRIVATE KEY", File.ReadAllText(Path.Combine(outDir, "alice.key")), StringComparison.Ordinal);
        Assert.ThrowsAny<CryptographicException>(() => X509Certificate2.CreateFromEncryptedPemFile(Path.Combine(outDir, "alice.crt"), "wrong", Path.Combine(outDir, "alice.key")));
        using X509Certificate2 pem = X509Certificate2.CreateFromEncryptedPemFile(Path.Combine(outDir, "alice.crt"), "correct horse", Path.Combine(outDir, "alice.key"));
        Assert.Equal(alice.Thumbprint, pem.Thumbprint);
        Assert.True(pem.HasPrivateKey);
    }

    [Fact]
    public async Task Issue_NameWithAValidIdentity_RefusedUnlessReplaceWhichRevokesTheOldOne()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        string first = dir.File("one/bob.pfx"), second = dir.File("two/bob.pfx");
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "issue", "--ca", pki, "--name", "bob", "--role", "client", "--out", first));

        int again = await CoordinatorCli.Run("pki", "issue", "--ca", pki, "--name", "bob", "--role", "client", "--out", second);
        Assert.Equal(CliRunner.BadUsage, again);
        Assert.False(File.Exists(second));

        int replaced = await CoordinatorCli.Run("pki", "issue", "--ca", pki, "--name", "bob", "--role", "client", "--out", second, "--replace");
        Assert.Equal(CliRunner.Ok, replaced);
        using X509Certificate2 old = X509CertificateLoader.LoadPkcs12FromFile(first, null);
        using X509Certificate2 current = X509CertificateLoader.LoadPkcs12FromFile(second, null);
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(pki, "ca.crt"));
        IReadOnlySet<System.Numerics.BigInteger> revoked = RevocationList.ReadVerified(File.ReadAllText(Path.Combine(pki, RevocationList.FileName)), ca, out _, out _);
        Assert.Contains(RevocationList.Serial(old.SerialNumberBytes.Span), revoked);
        Assert.DoesNotContain(RevocationList.Serial(current.SerialNumberBytes.Span), revoked);
        // The replacement is now the one valid identity: a third issue is refused again.
        Assert.Equal(CliRunner.BadUsage, await CoordinatorCli.Run("pki", "issue", "--ca", pki, "--name", "bob", "--role", "client", "--out", dir.File("three/bob.pfx")));
    }

    [Theory]
    [InlineData("--role", "boss")]
    [InlineData("--name", "../evil")]
    public async Task Issue_BadArgument_ExitsTwoAndWritesNothing(string flag, string value)
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        string outFile = dir.File("x/x.pfx");
        var args = new Dictionary<string, string> { ["--ca"] = pki, ["--name"] = "bob", ["--role"] = "client", ["--out"] = outFile };
        args[flag] = value;

        int code = await CoordinatorCli.Run(["pki", "issue", .. args.SelectMany(p => new[] { p.Key, p.Value })]);

        Assert.Equal(CliRunner.BadUsage, code);
        Assert.False(Directory.Exists(dir.File("x")));
    }

    [Fact]
    public async Task Init_ExistingCa_ExitsTwoAndKeepsTheCa()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        byte[] before = File.ReadAllBytes(Path.Combine(pki, "ca.crt"));

        Assert.Equal(CliRunner.BadUsage, await CoordinatorCli.Run("pki", "init", "--out", pki));

        Assert.Equal(before, File.ReadAllBytes(Path.Combine(pki, "ca.crt")));
    }

    [Fact]
    public void RoleRead_OuAndExtensionDisagree_ReturnsNull()
    {
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=mallory, OU=client", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(FederationRoleExtension.Create(FederationRole.Officer));
        using X509Certificate2 certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddDays(1));

        Assert.Null(FederationRoleExtension.Read(certificate));
    }
}
