using Federated.Coordinator.Pki;
using Federated.Coordinator.Security;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf.Reflection;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Every admin RPC called over real mutual TLS by an engineer, an officer and a client: each either gets past the role
/// check or is refused with PERMISSION_DENIED, exactly as <see cref="RpcRoles"/> says. The requests change nothing
/// (unknown runs, invalid values), so an allowed call ends in OK, NOT_FOUND or INVALID_ARGUMENT from the service itself.
/// </summary>
public sealed class AdminRoleMatrixTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private const string UnknownRun = "run-0000000000000000";

    /// <summary>One harmless call per admin method.</summary>
    private static readonly Dictionary<string, Func<AdminService.AdminServiceClient, CallOptions, Task>> s_calls = new(StringComparer.Ordinal)
    {
        ["StartRun"] = (admin, o) => admin.StartRunAsync(new StartRunRequest(), o).ResponseAsync,
        ["GetRunStatus"] = (admin, o) => admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = UnknownRun }, o).ResponseAsync,
        ["WatchRun"] = (admin, o) => Drain(admin.WatchRun(new WatchRunRequest { RunId = UnknownRun }, o)),
        ["AbortRun"] = (admin, o) => admin.AbortRunAsync(new AbortRunRequest { RunId = UnknownRun, Reason = "matrix" }, o).ResponseAsync,
        ["ExportRun"] = (admin, o) => Drain(admin.ExportRun(new ExportRunRequest { RunId = UnknownRun }, o)),
        ["ListClients"] = (admin, o) => admin.ListClientsAsync(new ListClientsRequest(), o).ResponseAsync,
        ["SetBudget"] = (admin, o) => admin.SetBudgetAsync(new SetBudgetRequest { Population = "matrix", Epsilon = 0, Delta = 1e-5 }, o).ResponseAsync,
        ["GetBudget"] = (admin, o) => admin.GetBudgetAsync(new GetBudgetRequest { Population = "matrix-none" }, o).ResponseAsync,
        ["GetLedger"] = (admin, o) => admin.GetLedgerAsync(new GetLedgerRequest(), o).ResponseAsync,
        ["GetAudit"] = (admin, o) => admin.GetAuditAsync(new GetAuditRequest { Limit = 1 }, o).ResponseAsync,
    };

    /// <summary>What the service answers an allowed caller for the harmless request above.</summary>
    private static readonly Dictionary<string, StatusCode> s_allowedOutcome = new(StringComparer.Ordinal)
    {
        ["StartRun"] = StatusCode.InvalidArgument,
        ["GetRunStatus"] = StatusCode.NotFound,
        ["WatchRun"] = StatusCode.NotFound,
        ["AbortRun"] = StatusCode.NotFound,
        ["ExportRun"] = StatusCode.NotFound,
        ["ListClients"] = StatusCode.OK,
        ["SetBudget"] = StatusCode.InvalidArgument,
        ["GetBudget"] = StatusCode.NotFound,
        ["GetLedger"] = StatusCode.OK,
        ["GetAudit"] = StatusCode.OK,
    };

    [Fact]
    public void Matrix_CoversEveryAdminMethod()
    {
        ServiceDescriptor admin = AdminReflection.Descriptor.FindTypeByName<ServiceDescriptor>("AdminService");
        Assert.Equal(admin.Methods.Select(m => m.Name).Order(StringComparer.Ordinal), s_calls.Keys.Order(StringComparer.Ordinal));
    }

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (string method in s_calls.Keys)
        {
            foreach (string identity in new[] { "engineer", "officer", "alice" })
            {
                data.Add(method, identity);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task AdminMethod_EachRole_PassesOrIsDeniedAsRpcRolesSays(string method, string identityName)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(identityName), coordinator.CaPath);
        FederationRole role = FederationRoleExtension.Read(identity.Certificate)!.Value;
        bool allowed = RpcRoles.Allowed($"/federated.v1.AdminService/{method}").Contains(role);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        var admin = new AdminService.AdminServiceClient(connection.Channel);

        StatusCode outcome = StatusCode.OK;
        string detail = "";
        try
        {
            await s_calls[method](admin, connection.Call(CancellationToken.None));
        }
        catch (RpcException ex)
        {
            (outcome, detail) = (ex.StatusCode, ex.Status.Detail);
        }

        if (allowed)
        {
            Assert.Equal(s_allowedOutcome[method], outcome);
        }
        else
        {
            Assert.Equal(StatusCode.PermissionDenied, outcome);
            Assert.Contains(role == FederationRole.Client ? "a client certificate cannot call the admin service" : $"role '{FederationRoleExtension.Name(role)}' may not call",
                detail, StringComparison.Ordinal);
        }
    }

    private static async Task Drain<T>(AsyncServerStreamingCall<T> call)
    {
        using (call)
        {
            await foreach (T _ in call.ResponseStream.ReadAllAsync())
            {
            }
        }
    }
}
