using Federated.Coordinator.Pki;
using Federated.Coordinator.Security;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Grpc.Health.V1;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Issue 8's role matrix for the edge, identity and health services: every RPC called over real mutual TLS by a
/// client, an engineer and an officer certificate, allowed or PERMISSION_DENIED exactly as <see cref="RpcRoles"/> says.
/// </summary>
public sealed class EdgeRoleMatrixTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly (string Identity, FederationRole Role)[] s_callers =
    [
        ("alice", FederationRole.Client),
        ("engineer", FederationRole.Engineer),
        ("officer", FederationRole.Officer),
    ];

    // The intended policy, written out independently of RpcRoles so that an accidental change there fails here.
    private static readonly Dictionary<string, FederationRole[]> s_intended = new(StringComparer.Ordinal)
    {
        ["/federated.v1.EdgeService/Register"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/Heartbeat"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/GetRoundManifest"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/DeclineRound"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/DownloadAdapter"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/AdvertiseKeys"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/ShareKeys"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/UploadMaskedInput"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/ConfirmSurvivors"] = [FederationRole.Client],
        ["/federated.v1.EdgeService/Unmask"] = [FederationRole.Client],
        ["/federated.v1.IdentityService/Renew"] = [FederationRole.Client, FederationRole.Engineer, FederationRole.Officer],
        ["/grpc.health.v1.Health/Check"] = [FederationRole.Client, FederationRole.Engineer, FederationRole.Officer],
        ["/grpc.health.v1.Health/Watch"] = [FederationRole.Client, FederationRole.Engineer, FederationRole.Officer],
    };

    [Fact]
    public void RpcRoles_EdgeIdentityAndHealthMethods_MatchTheIntendedPolicy()
    {
        MethodDescriptor[] methods = Methods();

        Assert.Equal(s_intended.Keys.Order(StringComparer.Ordinal), methods.Select(RoleMatrix.Path).Where(s_intended.ContainsKey).Order(StringComparer.Ordinal));
        Assert.All(methods.Where(m => m.Service.FullName != "grpc.health.v1.Health"), m => Assert.True(s_intended.ContainsKey(RoleMatrix.Path(m)), $"{RoleMatrix.Path(m)} has no intended roles"));
        Assert.All(s_intended, p => Assert.Equal(p.Value, RpcRoles.Allowed(p.Key)));
    }

    [Fact]
    public async Task EveryEdgeAndIdentityRpc_EachRole_AllowedOrPermissionDeniedAsRpcRolesSays()
    {
        var outcomes = new List<(string Path, FederationRole Role, Status Status)>();
        foreach ((string identity, FederationRole role) in s_callers)
        {
            using EdgeIdentity certificate = EdgeIdentity.Load(coordinator.Identity(identity), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, certificate);
            foreach (MethodDescriptor method in Methods())
            {
                outcomes.Add((RoleMatrix.Path(method), role, await RoleMatrix.ProbeAsync(connection.Channel, method, Probe(method))));
            }
        }

        Assert.Equal(3 * Methods().Length, outcomes.Count);
        foreach ((string path, FederationRole role, Status status) in outcomes)
        {
            bool allowed = RpcRoles.Allowed(path).Contains(role);
            string cell = $"{path} as {role}: {status.StatusCode} {status.Detail}";
            if (allowed)
            {
                // Reached the service: whatever it answered to the probe, it was not a role refusal.
                Assert.True(status.StatusCode is not (StatusCode.PermissionDenied or StatusCode.Unauthenticated or StatusCode.Unimplemented), cell);
            }
            else
            {
                Assert.True(status.StatusCode == StatusCode.PermissionDenied, cell);
                Assert.Contains($"role '{FederationRoleExtension.Name(role)}' may not call {path}", status.Detail, StringComparison.Ordinal);
            }
        }
        // A refused call changed nothing: staff certificates never became registered edge clients.
        Assert.DoesNotContain(coordinator.Host.State.Clients.List(), c => c.ClientId is "engineer" or "officer");
        Assert.Contains(coordinator.Host.State.Clients.List(), c => c.ClientId == "alice");
    }

    private static MethodDescriptor[] Methods() =>
        [.. EdgeService.Descriptor.Methods, .. IdentityService.Descriptor.Methods, .. Health.Descriptor.Methods.Where(m => RpcRoles.Methods.Contains(RoleMatrix.Path(m)))];

    /// <summary>A request each method answers without a role refusal when the role is allowed (Register first, so Heartbeat succeeds).</summary>
    private static IMessage Probe(MethodDescriptor method) => method.Name switch
    {
        "Register" => new RegisterRequest { ClientVersion = "matrix", Device = "cpu" },
        "Heartbeat" => new HeartbeatRequest { Available = false },
        _ => method.InputType.Parser.ParseFrom(ByteString.Empty),
    };
}
