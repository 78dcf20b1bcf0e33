using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Coordinator.State;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Grpc.Core;
using Grpc.Net.Client;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Issue 8's certificate cases on real loopback sockets: each bad client certificate is refused at the TLS
/// handshake with a log line naming why and leaves no trace in the state; each bad server certificate is refused
/// by the edge client with a log line.
/// </summary>
public sealed class CertificateRejectionTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly DateTimeOffset s_now = DateTimeOffset.UtcNow;

    public static TheoryData<string, string> BadClients => new()
    {
        { "self-signed", "does not chain to the federation CA" },
        { "expired", "NotTimeValid" },
        { "not-yet-valid", "NotTimeValid" },
        { "server-auth-only", "NotValidForUsage" },
        { "no-signing-key-usage", "lacks the digitalSignature key usage" },
    };

    [Theory]
    [MemberData(nameof(BadClients))]
    public async Task Register_FlawedClientCertificate_RefusedLoggedAndNothingWritten(string flaw, string expectedReason)
    {
        using X509Certificate2 certificate = flaw switch
        {
            "self-signed" => TestCertificates.Create(null, flaw, s_now.AddHours(-1), s_now.AddDays(1)),
            "expired" => TestCertificates.Create(coordinator.Pki, flaw, s_now.AddDays(-10), s_now.AddDays(-1)),
            "not-yet-valid" => TestCertificates.Create(coordinator.Pki, flaw, s_now.AddDays(1), s_now.AddDays(10)),
            "server-auth-only" => TestCertificates.Create(coordinator.Pki, flaw, s_now.AddHours(-1), s_now.AddDays(1), FederationTrust.ServerAuthOid),
            "no-signing-key-usage" => TestCertificates.Create(coordinator.Pki, flaw, s_now.AddHours(-1), s_now.AddDays(1), keyUsage: X509KeyUsageFlags.NonRepudiation),
            _ => throw new ArgumentOutOfRangeException(nameof(flaw), flaw, "unknown flaw"),
        };
        (int clients, int audit) = Counts();
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(coordinator.CaPath);
        using GrpcChannel channel = AttackerChannel(certificate, ca);

        await Assert.ThrowsAnyAsync<RpcException>(() =>
            new EdgeService.EdgeServiceClient(channel).RegisterAsync(new RegisterRequest { ClientVersion = "x" }, deadline: DateTime.UtcNow.AddSeconds(10)).ResponseAsync);

        Assert.Equal((clients, audit), Counts());
        Assert.DoesNotContain(coordinator.Host.State.Clients.List(), c => c.ClientId == flaw);
        Assert.Contains(coordinator.Logs.Lines, l => l.EventId == 1001
            && l.Message.Contains($"CN={flaw}", StringComparison.Ordinal)
            && l.Message.Contains(expectedReason, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Revoke_WhileCoordinatorRuns_OpenAndNewConnectionsRefusedOthersUnaffected()
    {
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            pki.IssueIdentity(coordinator.Pki, "revokee", FederationRole.Client, password: null);
        }
        using EdgeIdentity revokee = EdgeIdentity.Load(coordinator.Identity("revokee"), coordinator.CaPath);
        using var open = new CoordinatorConnection(coordinator.Address, revokee, FastFailing());
        await open.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using (var first = new CoordinatorConnection(coordinator.Address, alice, FastFailing()))
        {
            await first.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);
        }
        ClientRecord before = Assert.Single(coordinator.Host.State.Clients.List(), c => c.ClientId == "revokee");
        int audit = Counts().Audit;

        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            Assert.Single(pki.Revoke("revokee"));
        }

        // The connection opened before the revocation loses access at its next call.
        var onOpen = await Assert.ThrowsAsync<RpcException>(() => open.HeartbeatAsync(new HeartbeatRequest { Available = false }, CancellationToken.None));
        // A new connection is refused at the handshake.
        using var fresh = new CoordinatorConnection(coordinator.Address, revokee, FastFailing());
        await Assert.ThrowsAnyAsync<RpcException>(() => fresh.RegisterAsync(new RegisterRequest { ClientVersion = "again" }, CancellationToken.None));
        // Everyone else still gets in once the CRL exists.
        using var other = new CoordinatorConnection(coordinator.Address, alice, FastFailing());
        RegisterResponse registered = await other.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);

        Assert.Equal(StatusCode.Unauthenticated, onOpen.StatusCode);
        Assert.Contains("is revoked", onOpen.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("alice", registered.ClientId);
        Assert.Equal(before, Assert.Single(coordinator.Host.State.Clients.List(), c => c.ClientId == "revokee"));
        Assert.Equal(audit, Counts().Audit); // alice re-registering with the same certificate is not audited
        Assert.Contains(coordinator.Logs.Lines, l => l.EventId == 1001 && l.Message.Contains("CN=revokee", StringComparison.Ordinal) && l.Message.Contains("is revoked", StringComparison.Ordinal));
        Assert.Contains(coordinator.Logs.Lines, l => l.EventId == 1003 && l.Message.Contains("is revoked", StringComparison.Ordinal));
    }

    public static TheoryData<string, string> BadServers => new()
    {
        { "client-certificate-as-server", "NotValidForUsage" },
        { "name-mismatch", "does not name the host connected to" },
    };

    [Theory]
    [MemberData(nameof(BadServers))]
    public async Task EdgeClient_FlawedServerCertificate_RefusesAndLogs(string flaw, string expectedReason)
    {
        using X509Certificate2 serverCertificate = flaw == "name-mismatch"
            ? TestCertificates.Create(coordinator.Pki, "coordinator.example.org", s_now.AddHours(-1), s_now.AddDays(1), FederationTrust.ServerAuthOid, dnsNames: ["coordinator.example.org"])
            : TestCertificates.Create(coordinator.Pki, "impostor", s_now.AddHours(-1), s_now.AddDays(1), FederationTrust.ClientAuthOid, dnsNames: ["localhost"], loopbackAddress: true);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        Task<bool> server = ServeOnceAsync(listener, serverCertificate);
        var logs = new CapturedLogs();
        using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        var address = new Uri($"https://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}");
        using var connection = new CoordinatorConnection(address, alice, FastFailing() with { MaxRetries = 1, Logger = logs.CreateLogger("edge") });

        await Assert.ThrowsAnyAsync<RpcException>(() => connection.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None));

        Assert.False(await server, "the edge client completed a TLS handshake with a server it must refuse");
        Assert.Null(connection.ServerCertificate);
        Assert.Contains(logs.Lines, l => l.EventId == 2001 && l.Message.Contains(expectedReason, StringComparison.Ordinal));
    }

    /// <summary>Accepts one connection and tries the server side of the handshake; true when the client accepted our certificate.</summary>
    private static async Task<bool> ServeOnceAsync(TcpListener listener, X509Certificate2 certificate)
    {
        using TcpClient client = await listener.AcceptTcpClientAsync();
        await using var tls = new SslStream(client.GetStream());
        try
        {
            await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = certificate,
                ApplicationProtocols = [SslApplicationProtocol.Http2],
                ClientCertificateRequired = false,
            });
            // Under TLS 1.3 the server's side completes before the client has judged the certificate: a client
            // that accepted it goes on to send the HTTP/2 preface, one that refused it sends an alert and closes.
            byte[] buffer = new byte[1];
            return await tls.ReadAsync(buffer) > 0;
        }
        catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException)
        {
            return false;
        }
    }

    private static ConnectionOptions FastFailing() => new()
    {
        MaxRetries = 1,
        InitialBackoff = TimeSpan.FromMilliseconds(10),
        MaximumBackoff = TimeSpan.FromMilliseconds(20),
        CallTimeout = TimeSpan.FromSeconds(10),
    };

    private (int Clients, int Audit) Counts() =>
        (coordinator.Host.State.Clients.List().Count, coordinator.Host.State.Audit.Read(1, 100_000).Entries.Count);

    /// <summary>A channel built by hand, as an attacker would: it trusts the server and presents whatever certificate it likes.</summary>
    private GrpcChannel AttackerChannel(X509Certificate2 clientCertificate, X509Certificate2 ca)
    {
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = [clientCertificate],
                LocalCertificateSelectionCallback = (_, _, _, _, _) => clientCertificate,
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                    new FederationTrust(ca, TimeProvider.System).TryValidateServer(certificate, errors, out _, out _),
            },
        };
        return GrpcChannel.ForAddress(coordinator.Address, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
    }
}
