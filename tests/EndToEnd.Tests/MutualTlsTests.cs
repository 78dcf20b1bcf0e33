using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.State;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;

namespace Federated.EndToEnd.Tests;

public sealed class MutualTlsTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Register_ValidClientCertificate_RegistersAndHeartbeats()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);

        RegisterResponse registered = await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);

        Assert.Equal("alice", registered.ClientId);
        Assert.True(heartbeat.HeartbeatIntervalSeconds > 0);
        ClientRecord alice = Assert.Single(coordinator.Host.State.Clients.List(), c => c.ClientId == "alice");
        Assert.Equal(identity.Certificate.GetCertHashString(System.Security.Cryptography.HashAlgorithmName.SHA256).ToLowerInvariant(), alice.CertificateSha256);
        Assert.True(alice.Available);
    }

    [Fact]
    public async Task Heartbeat_BeforeRegister_FailedPrecondition()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);

        var ex = await Assert.ThrowsAsync<RpcException>(() => connection.HeartbeatAsync(new HeartbeatRequest(), CancellationToken.None));

        Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode);
        Assert.DoesNotContain(coordinator.Host.State.Clients.List(), c => c.ClientId == "bob");
    }

    [Fact]
    public async Task Register_NoClientCertificate_RefusedAndNothingWritten()
    {
        int auditBefore = AuditCount();
        int clientsBefore = coordinator.Host.State.Clients.List().Count;
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(coordinator.CaPath);
        using GrpcChannel channel = Channel(clientCertificate: null, ca);

        await Assert.ThrowsAnyAsync<RpcException>(() =>
            new EdgeService.EdgeServiceClient(channel).RegisterAsync(new RegisterRequest { ClientVersion = "x" }, deadline: DateTime.UtcNow.AddSeconds(10)).ResponseAsync);

        Assert.Equal(clientsBefore, coordinator.Host.State.Clients.List().Count);
        Assert.Equal(auditBefore, AuditCount());
    }

    [Fact]
    public async Task Register_CertificateFromAnotherCa_RefusedLoggedAndNothingWritten()
    {
        int auditBefore = AuditCount();
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(coordinator.CaPath);
        using X509Certificate2 mallory = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(coordinator.RoguePki, "mallory.pfx"), null);
        using GrpcChannel channel = Channel(mallory, ca);

        await Assert.ThrowsAnyAsync<RpcException>(() =>
            new EdgeService.EdgeServiceClient(channel).RegisterAsync(new RegisterRequest { ClientVersion = "x" }, deadline: DateTime.UtcNow.AddSeconds(10)).ResponseAsync);

        Assert.DoesNotContain(coordinator.Host.State.Clients.List(), c => c.ClientId == "mallory");
        Assert.Equal(auditBefore, AuditCount());
        Assert.Contains(coordinator.Logs.Lines, l => l.EventId == 1001 && l.Message.Contains("CN=mallory", StringComparison.Ordinal));
    }

    [Fact]
    public void EdgeIdentity_CertificateFromAnotherCa_RefusedBeforeConnecting()
    {
        var ex = Assert.Throws<System.Security.Cryptography.CryptographicException>(() =>
            EdgeIdentity.Load(Path.Combine(coordinator.RoguePki, "mallory.pfx"), coordinator.CaPath));
        Assert.Contains("not a client identity of this federation", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AdminService_ClientCertificate_PermissionDeniedWithClearMessage()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        var admin = new AdminService.AdminServiceClient(connection.Channel);

        var ex = await Assert.ThrowsAsync<RpcException>(() => admin.ListClientsAsync(new ListClientsRequest(), connection.Call(CancellationToken.None)).ResponseAsync);

        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        Assert.Contains("client certificate cannot call the admin service", ex.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EdgeService_EngineerCertificate_PermissionDenied()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);

        var ex = await Assert.ThrowsAsync<RpcException>(() => connection.RegisterAsync(new RegisterRequest(), CancellationToken.None));

        Assert.Equal(StatusCode.PermissionDenied, ex.StatusCode);
        Assert.Contains("role 'engineer' may not call /federated.v1.EdgeService/Register", ex.Status.Detail, StringComparison.Ordinal);
        Assert.DoesNotContain(coordinator.Host.State.Clients.List(), c => c.ClientId == "engineer");
    }

    [Fact]
    public async Task SetBudget_EngineerDeniedOfficerAllowed_AuditedWithOfficerIdentity()
    {
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using EdgeIdentity officer = EdgeIdentity.Load(coordinator.Identity("officer"), coordinator.CaPath);
        using var asEngineer = new CoordinatorConnection(coordinator.Address, engineer);
        using var asOfficer = new CoordinatorConnection(coordinator.Address, officer);
        var engineerAdmin = new AdminService.AdminServiceClient(asEngineer.Channel);
        var officerAdmin = new AdminService.AdminServiceClient(asOfficer.Channel);
        var request = new SetBudgetRequest { Population = "hospitals", Epsilon = 4, Delta = 1e-6 };

        var denied = await Assert.ThrowsAsync<RpcException>(() => engineerAdmin.SetBudgetAsync(request, asEngineer.Call(CancellationToken.None)).ResponseAsync);
        Budget budget = await officerAdmin.SetBudgetAsync(request, asOfficer.Call(CancellationToken.None));
        var invalid = await Assert.ThrowsAsync<RpcException>(() =>
            officerAdmin.SetBudgetAsync(new SetBudgetRequest { Population = "hospitals", Epsilon = double.NaN, Delta = 1e-6 }, asOfficer.Call(CancellationToken.None)).ResponseAsync);
        GetAuditResponse audit = await engineerAdmin.GetAuditAsync(new GetAuditRequest(), asEngineer.Call(CancellationToken.None));

        Assert.Equal(StatusCode.PermissionDenied, denied.StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, invalid.StatusCode);
        Assert.Equal(("hospitals", 4.0, "officer"), (budget.Population, budget.Epsilon, budget.SetBy));
        Assert.Equal(4.0, coordinator.Host.State.Budgets.Get("hospitals")!.Epsilon);
        Assert.Contains(audit.Entries, e => e.CanonicalJson.Contains("\"action\":\"budget.set\",\"actor\":\"officer\"", StringComparison.Ordinal));
        Assert.Equal(audit.Entries[^1].Hash, audit.HeadHash);
    }

    [Fact]
    public async Task StartRun_WithoutPlan_InvalidArgument()
    {
        using EdgeIdentity engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, engineer);
        var admin = new AdminService.AdminServiceClient(connection.Channel);

        var ex = await Assert.ThrowsAsync<RpcException>(() => admin.StartRunAsync(new StartRunRequest(), connection.Call(CancellationToken.None)).ResponseAsync);

        Assert.Equal(StatusCode.InvalidArgument, ex.StatusCode);
    }

    [Fact]
    public async Task HealthCheck_AnyFederationIdentity_Serving()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);

        HealthCheckResponse response = await new Health.HealthClient(connection.Channel).CheckAsync(new HealthCheckRequest(), connection.Call(CancellationToken.None));

        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, response.Status);
    }

    private int AuditCount() => coordinator.Host.State.Audit.Read(1, 100_000).Entries.Count;

    /// <summary>A channel built by hand, as an attacker would: it trusts the server and presents whatever certificate it likes.</summary>
    private GrpcChannel Channel(X509Certificate2? clientCertificate, X509Certificate2 ca)
    {
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = clientCertificate is null ? null : [clientCertificate],
                LocalCertificateSelectionCallback = clientCertificate is null ? null : (_, _, _, _, _) => clientCertificate,
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                    new FederationTrust(ca, TimeProvider.System).TryValidateServer(certificate, errors, out _, out _),
            },
        };
        return GrpcChannel.ForAddress(coordinator.Address, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
    }
}
