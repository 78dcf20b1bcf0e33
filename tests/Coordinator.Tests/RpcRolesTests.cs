using Federated.Coordinator.Pki;
using Federated.Coordinator.Security;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf.Reflection;

namespace Federated.Coordinator.Tests;

public sealed class RpcRolesTests
{
    [Fact]
    public void Allowed_EveryServiceMethod_HasAPolicyAndClientsOnlyReachTheEdgeService()
    {
        ServiceDescriptor edge = EdgeReflection.Descriptor.FindTypeByName<ServiceDescriptor>("EdgeService");
        ServiceDescriptor admin = AdminReflection.Descriptor.FindTypeByName<ServiceDescriptor>("AdminService");

        foreach (MethodDescriptor method in edge.Methods)
        {
            Assert.Equal([FederationRole.Client], RpcRoles.Allowed($"/{edge.FullName}/{method.Name}"));
        }
        foreach (MethodDescriptor method in admin.Methods)
        {
            IReadOnlyList<FederationRole> roles = RpcRoles.Allowed($"/{admin.FullName}/{method.Name}");
            Assert.NotEmpty(roles);
            Assert.DoesNotContain(FederationRole.Client, roles);
        }
    }

    [Theory]
    [InlineData("StartRun", "engineer", true)]
    [InlineData("StartRun", "officer", false)]
    [InlineData("SetBudget", "officer", true)]
    [InlineData("SetBudget", "engineer", false)]
    [InlineData("GetLedger", "engineer", false)]
    [InlineData("GetAudit", "engineer", true)]
    [InlineData("GetAudit", "officer", true)]
    [InlineData("ListClients", "officer", false)]
    public void Allowed_AdminMethod_MatchesIssueSevenMatrix(string method, string roleName, bool expected)
    {
        Assert.True(FederationRoleExtension.TryParse(roleName, out FederationRole role));
        Assert.Equal(expected, RpcRoles.Allowed($"/federated.v1.AdminService/{method}").Contains(role));
    }

    [Fact]
    public void Allowed_UnknownMethod_DeniesEveryone()
    {
        Assert.Empty(RpcRoles.Allowed("/federated.v1.AdminService/DropDatabase"));
    }
}
