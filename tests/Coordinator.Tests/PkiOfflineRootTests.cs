using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Tests.Cli;
using Federated.Trust;

namespace Federated.Coordinator.Tests;

/// <summary>
/// The `pki` commands with the root key carried off the coordinator host: `pki init --root-out` and
/// `--renewal-intermediate`, then `pki issue` and `pki revoke` given `--root-key`, and the adapter signer for a folder without one.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PkiOfflineRootTests
{
    [Fact]
    public async Task Init_RootOutWithRenewalIntermediate_RootKeyOnlyInRootFolderAndConstrainedIntermediateInTrustFile()
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki"), root = dir.File("root");

        int code = await CoordinatorCli.Run("pki", "init", "--pki", pki, "--root-out", root, "--renewal-intermediate");

        Assert.Equal(CliRunner.Ok, code);
        Assert.False(File.Exists(Path.Combine(pki, "ca.key")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(root, "ca.key")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(pki, "intermediate.key")));
        using FederationCaBundle bundle = FederationCaBundle.Load(Path.Combine(pki, "ca.crt"));
        X509Certificate2 intermediate = Assert.Single(bundle.Intermediates);
        var constraints = Assert.IsType<X509BasicConstraintsExtension>(intermediate.Extensions["2.5.29.19"]);
        Assert.True(constraints.CertificateAuthority);
        Assert.True(constraints.HasPathLengthConstraint);
        Assert.Equal(0, constraints.PathLengthConstraint);
        Assert.True(RenewalIntermediate.HasOnlyExtendedKeyUsage(intermediate, FederationTrust.ClientAuthOid));
        Assert.True(RenewalIntermediate.IsConstrained(intermediate, out string reason), reason);
        // The root signed everything the coordinator serves with.
        var trust = new FederationTrust(bundle.Root, TimeProvider.System, revocation: null, bundle.Intermediates);
        using X509Certificate2 server = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, "server.pfx"), null);
        Assert.True(trust.TryBuildChain(server, FederationTrust.ServerAuthOid, out X509Certificate2? through, out reason), reason);
        Assert.Null(through);
    }

    [Fact]
    public async Task IssueAndRevoke_RootKeyElsewhere_RefusedWithoutRootKeyWorkWithIt()
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki"), root = dir.File("root");
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "init", "--pki", pki, "--root-out", root));

        (int refused, _, string error) = await CoordinatorCli.RunCapturedAsync("pki", "issue", "--pki", pki, "--name", "hospital-a", "--role", "client", "--out", dir.File("a/hospital-a.pfx"));
        Assert.NotEqual(CliRunner.Ok, refused);
        Assert.Contains("--root-key", error, StringComparison.Ordinal);

        string rootKey = Path.Combine(root, "ca.key");
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "issue", "--pki", pki, "--root-key", rootKey, "--name", "hospital-a", "--role", "client", "--out", dir.File("a/hospital-a.pfx")));
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "revoke", "--pki", pki, "--root-key", rootKey, "--name", "hospital-a"));

        using X509Certificate2 ca = FederationCaBundle.LoadRoot(Path.Combine(pki, "ca.crt"));
        using X509Certificate2 issued = X509CertificateLoader.LoadPkcs12FromFile(dir.File("a/hospital-a.pfx"), null);
        IReadOnlySet<System.Numerics.BigInteger> revoked = RevocationList.ReadVerified(File.ReadAllText(Path.Combine(pki, RevocationList.FileName)), ca, out _, out _);
        Assert.Contains(RevocationList.Serial(issued.SerialNumberBytes.Span), revoked);
    }

    [Fact]
    public async Task RevokeIntermediate_RenewedCertificatesRefusedRootIssuedOnesStillValid()
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki");
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "init", "--pki", pki, "--renewal-intermediate"));
        Assert.Equal(CliRunner.Ok, await CoordinatorCli.Run("pki", "issue", "--pki", pki, "--name", "hospital-a", "--role", "client", "--out", dir.File("a/hospital-a.pfx")));
        using X509Certificate2 original = X509CertificateLoader.LoadPkcs12FromFile(dir.File("a/hospital-a.pfx"), null);
        using System.Security.Cryptography.ECDsa newKey = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        byte[] csr = new CertificateRequest(original.SubjectName, newKey, System.Security.Cryptography.HashAlgorithmName.SHA256).CreateSigningRequest();
        X509Certificate2 renewed;
        using (FederationPki intermediate = FederationPki.LoadRenewalIntermediate(pki, TimeProvider.System)!)
        {
            renewed = intermediate.Renew(original, csr, TimeSpan.FromDays(30));
        }
        using (renewed)
        {
            using FederationCaBundle bundle = FederationCaBundle.Load(Path.Combine(pki, "ca.crt"));
            var trust = new FederationTrust(bundle.Root, TimeProvider.System, new RevocationCache(Path.Combine(pki, RevocationList.FileName), bundle.Root), bundle.Intermediates);
            Assert.True(trust.TryValidateClient(renewed, out _, out string before), before);

            Assert.Equal(CliRunner.BadUsage, await CoordinatorCli.Run("pki", "revoke", "--pki", pki));
            int code = await CoordinatorCli.Run("pki", "revoke", "--pki", pki, "--intermediate");

            Assert.Equal(CliRunner.Ok, code);
            Assert.False(trust.TryValidateClient(renewed, out _, out string reason));
            Assert.Contains("revoked intermediate", reason, StringComparison.Ordinal);
            Assert.True(trust.TryValidateClient(original, out _, out reason), reason);
        }
    }

    [Fact]
    public async Task Issue_AdapterSignerForAFolderWithoutOne_RootSignedCodeSigningIdentity()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        foreach (string file in Directory.GetFiles(pki, FederationPki.AdapterSignerName + ".*"))
        {
            File.Delete(file);
        }

        int code = await CoordinatorCli.Run("pki", "issue", "--ca", pki, "--adapter-signer");

        Assert.Equal(CliRunner.Ok, code);
        using X509Certificate2 ca = FederationCaBundle.LoadRoot(Path.Combine(pki, "ca.crt"));
        using X509Certificate2 signer = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, FederationPki.AdapterSignerName + ".pfx"), null);
        Assert.True(new FederationTrust(ca, TimeProvider.System).TryBuildChain(signer, FederationTrust.CodeSigningOid, out string reason), reason);
    }
}
