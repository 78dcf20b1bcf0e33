using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Cli;
using Federated.Coordinator.Pki;
using Federated.EdgeClient.Cli;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf;
using Grpc.Core;
using Spectre.Console.Cli;

namespace Federated.EndToEnd.Tests;

/// <summary>`edge-client renew` against a real coordinator: a new key, the same subject and role, short-lived, audited, revocable by name.</summary>
public sealed class RenewTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Renew_ClientIdentity_NewKeySameNameShortLivedAuditedAndRevocableByName()
    {
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            pki.IssueIdentity(coordinator.Pki, "renewing", FederationRole.Client, password: null);
        }
        string renewedPath = Path.Combine(coordinator.Root, "renewing-new.pfx");
        using X509Certificate2 old = X509CertificateLoader.LoadPkcs12FromFile(coordinator.Identity("renewing"), null);

        // CliRunner is linked into both executables, so the test drives the edge client's command tree directly.
        var app = new CommandApp();
        app.Configure(config =>
        {
            config.PropagateExceptions();
            EdgeClientCommands.Configure(config);
        });
        int code = await app.RunAsync(
            ["renew", "--identity", coordinator.Identity("renewing"), "--ca", coordinator.CaPath, "--coordinator", coordinator.Address.ToString(), "--out", renewedPath]);

        Assert.Equal(0, code);
        using EdgeIdentity renewed = EdgeIdentity.Load(renewedPath, coordinator.CaPath);
        Assert.Equal(old.SubjectName.Name, renewed.Certificate.SubjectName.Name);
        Assert.Equal(FederationRole.Client, FederationRoleExtension.Read(renewed.Certificate));
        Assert.NotEqual(old.SerialNumber, renewed.Certificate.SerialNumber);
        Assert.False(renewed.Certificate.PublicKey.EncodedKeyValue.RawData.AsSpan().SequenceEqual(old.PublicKey.EncodedKeyValue.RawData));
        Assert.True(renewed.Certificate.NotAfter.ToUniversalTime() <= DateTime.UtcNow.AddDays(31));
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(renewedPath));
        }
        Assert.Contains(coordinator.Host.State.Audit.Read(1, 100_000).Entries, e =>
            e.CanonicalJson.Contains("\"action\":\"certificate.renew\",\"actor\":\"renewing\"", StringComparison.Ordinal));

        using (var connection = new CoordinatorConnection(coordinator.Address, renewed))
        {
            RegisterResponse registered = await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);
            Assert.Equal("renewing", registered.ClientId);
        }

        // Revoking the name revokes the renewed certificate too (the CA keeps a record of every one it signs).
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            Assert.Equal(2, pki.Revoke("renewing").Count);
        }
        using var afterRevocation = new CoordinatorConnection(coordinator.Address, renewed, new ConnectionOptions { MaxRetries = 1, InitialBackoff = TimeSpan.FromMilliseconds(10) });
        await Assert.ThrowsAnyAsync<RpcException>(() => afterRevocation.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None));
    }

    [Fact]
    public async Task Renew_CoordinatorListWithADeadFirstEntry_SaysSoAndRenewsAtTheNext()
    {
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            pki.IssueIdentity(coordinator.Pki, "renewing-list", FederationRole.Client, password: null);
        }
        string renewedPath = Path.Combine(coordinator.Root, "renewing-list-new.pfx");
        // Nothing listens on a port that was just bound and released.
        string dead;
        using (var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            probe.Start();
            dead = $"https://127.0.0.1:{((System.Net.IPEndPoint)probe.LocalEndpoint).Port}";
        }

        (int code, string stdout, string stderr) = await ConsoleCapture.RunAsync(() => CliRunner.RunAsync("edge-client", EdgeClientCommands.Configure,
            ["renew", "--identity", coordinator.Identity("renewing-list"), "--ca", coordinator.CaPath, "--coordinator", $"{dead},{coordinator.Address}", "--out", renewedPath]));

        Assert.True(code == 0, stderr);
        Assert.Contains($"edge-client: coordinator {dead} unavailable (", stderr, StringComparison.Ordinal);
        Assert.Contains($"trying {coordinator.Address}", stderr, StringComparison.Ordinal);
        Assert.Contains("renewed 'renewing-list'", stdout, StringComparison.Ordinal);
        using EdgeIdentity renewed = EdgeIdentity.Load(renewedPath, coordinator.CaPath);
        Assert.Equal("renewing-list", renewed.Name);
    }

    [Fact]
    public async Task Renew_CoordinatorListFirstCertificateRefused_StopsThereWithoutTryingTheNext()
    {
        // Mallory of another federation with that federation's CA: the real coordinator's certificate does not chain to it.
        string mallory = Path.Combine(coordinator.Root, "mallory-renew.pfx");
        File.Copy(Path.Combine(coordinator.RoguePki, "mallory.pfx"), mallory);
        string foreignCa = Path.Combine(coordinator.RoguePki, FederationPki.CaCertificateFile);

        (int code, _, string stderr) = await ConsoleCapture.RunAsync(() => CliRunner.RunAsync("edge-client", EdgeClientCommands.Configure,
            ["renew", "--identity", mallory, "--ca", foreignCa, "--coordinator", $"{coordinator.Address},https://127.0.0.1:9"]));

        Assert.Equal(1, code);
        Assert.Contains($"the coordinator at {coordinator.Address} presented a certificate this client refuses", stderr, StringComparison.Ordinal);
        Assert.Contains("check --ca", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("trying https://127.0.0.1:9", stderr, StringComparison.Ordinal);
        using X509Certificate2 unchanged = X509CertificateLoader.LoadPkcs12FromFile(mallory, null);
        using X509Certificate2 original = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(coordinator.RoguePki, "mallory.pfx"), null);
        Assert.Equal(original.SerialNumber, unchanged.SerialNumber);
    }

    [Theory]
    [InlineData("https://127.0.0.1:7443,")]
    [InlineData("http://127.0.0.1:7443")]
    [InlineData("https://127.0.0.1:7443,https://127.0.0.1:7443")]
    public async Task Renew_BadCoordinatorList_ExitsWithUsageErrorNamingTheEntry(string list)
    {
        (int code, _, string stderr) = await ConsoleCapture.RunAsync(() => CliRunner.RunAsync("edge-client", EdgeClientCommands.Configure,
            ["renew", "--identity", coordinator.Identity("alice"), "--ca", coordinator.CaPath, "--coordinator", list]));

        Assert.Equal(2, code);
        Assert.Contains("--coordinator", stderr, StringComparison.Ordinal);
    }

    public static TheoryData<string> BadRequests => ["current-key", "bad-signature", "rsa-key", "garbage"];

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task Renew_BadSigningRequest_InvalidArgumentAndNothingIssued(string flaw)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("erin"), coordinator.CaPath);
        byte[] csr;
        switch (flaw)
        {
            case "current-key":
                csr = new CertificateRequest(identity.Certificate.SubjectName, identity.Certificate.GetECDsaPrivateKey()!, HashAlgorithmName.SHA256).CreateSigningRequest();
                break;
            case "bad-signature":
                using (ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256))
                {
                    csr = new CertificateRequest(identity.Certificate.SubjectName, key, HashAlgorithmName.SHA256).CreateSigningRequest();
                }
                csr[^3] ^= 0x01;
                break;
            case "rsa-key":
                using (RSA rsa = RSA.Create(2048))
                {
                    csr = new CertificateRequest(identity.Certificate.SubjectName, rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1).CreateSigningRequest();
                }
                break;
            default:
                csr = RandomNumberGenerator.GetBytes(200);
                break;
        }
        int issuedBefore = Directory.GetFiles(Path.Combine(coordinator.Pki, FederationPki.IssuedFolder)).Length;
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        var client = new IdentityService.IdentityServiceClient(connection.Channel);

        var ex = await Assert.ThrowsAsync<RpcException>(() => client.RenewAsync(new RenewRequest { Csr = ByteString.CopyFrom(csr) }, connection.Call(CancellationToken.None)).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
        Assert.Equal(issuedBefore, Directory.GetFiles(Path.Combine(coordinator.Pki, FederationPki.IssuedFolder)).Length);
    }
}
