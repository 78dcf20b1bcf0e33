using Federated.Trust;

namespace Federated.Coordinator.Security;

/// <summary>Which roles may call each RPC: clients the edge service only, engineers and officers the admin service as issue 7 lists.</summary>
internal static class RpcRoles
{
    private static readonly FederationRole[] s_client = [FederationRole.Client];
    private static readonly FederationRole[] s_engineer = [FederationRole.Engineer];
    private static readonly FederationRole[] s_officer = [FederationRole.Officer];
    private static readonly FederationRole[] s_staff = [FederationRole.Engineer, FederationRole.Officer];
    private static readonly FederationRole[] s_everyone = [FederationRole.Client, FederationRole.Engineer, FederationRole.Officer];

    private static readonly Dictionary<string, FederationRole[]> s_byMethod = new(StringComparer.Ordinal)
    {
        ["/federated.v1.EdgeService/Register"] = s_client,
        ["/federated.v1.EdgeService/Heartbeat"] = s_client,
        ["/federated.v1.EdgeService/GetRoundManifest"] = s_client,
        ["/federated.v1.EdgeService/DeclineRound"] = s_client,
        ["/federated.v1.EdgeService/DownloadAdapter"] = s_client,
        ["/federated.v1.EdgeService/AdvertiseKeys"] = s_client,
        ["/federated.v1.EdgeService/ShareKeys"] = s_client,
        ["/federated.v1.EdgeService/UploadMaskedInput"] = s_client,
        ["/federated.v1.EdgeService/ConfirmSurvivors"] = s_client,
        ["/federated.v1.EdgeService/Unmask"] = s_client,
        ["/federated.v1.AdminService/StartRun"] = s_engineer,
        ["/federated.v1.AdminService/GetRunStatus"] = s_staff,
        ["/federated.v1.AdminService/WatchRun"] = s_staff,
        ["/federated.v1.AdminService/AbortRun"] = s_engineer,
        ["/federated.v1.AdminService/ExportRun"] = s_engineer,
        ["/federated.v1.AdminService/ListClients"] = s_engineer,
        ["/federated.v1.AdminService/SetBudget"] = s_officer,
        ["/federated.v1.AdminService/GetBudget"] = s_officer,
        ["/federated.v1.AdminService/GetLedger"] = s_officer,
        ["/federated.v1.AdminService/GetAudit"] = s_staff,
        // Renewal keeps the caller's own subject and role, so every identity may renew itself.
        ["/federated.v1.IdentityService/Renew"] = s_everyone,
        ["/grpc.health.v1.Health/Check"] = s_everyone,
        ["/grpc.health.v1.Health/Watch"] = s_everyone,
        ["/grpc.health.v1.Health/List"] = s_everyone,
    };

    public static IReadOnlyCollection<string> Methods => s_byMethod.Keys;

    /// <summary>The roles allowed to call <paramref name="method"/>; empty (deny) for a method not listed here.</summary>
    public static IReadOnlyList<FederationRole> Allowed(string method) =>
        s_byMethod.TryGetValue(method, out FederationRole[]? roles) ? roles : [];
}
