using Federated.Protos.V1;
using Federated.Trust;

namespace Federated.Coordinator.Dashboard;

/// <summary>
/// A section of the page read over one admin RPC: its value, or why there is none (the role may not read it, or the
/// call failed). Never both.
/// </summary>
internal sealed record Section<T>(T? Value, string? Unavailable) where T : class
{
    public static Section<T> Of(T value) => new(value, null);

    public static Section<T> Refused(string why) => new(null, why);
}

/// <summary>A run as the page shows it: what the audit trail says plus its live status (null when the status call failed).</summary>
internal sealed record DashboardRun(RunHistory History, RunStatus? Status, string? StatusProblem);

/// <summary>Everything one render of the dashboard shows, read in one poll of the coordinator.</summary>
internal sealed record DashboardSnapshot(
    string Coordinator,
    string Caller,
    FederationRole Role,
    DateTimeOffset ReadAt,
    Section<IReadOnlyList<DashboardRun>> Runs,
    Section<IReadOnlyList<ClientInfo>> Clients,
    Section<IReadOnlyList<Budget>> Budgets,
    Section<IReadOnlyList<AuditLine>> Audit,
    string? AuditProblem,
    ulong AuditHeadSequence,
    string AuditHeadHash,
    string? Notice)
{
    /// <summary>Only engineers may abort runs: the control is rendered for them alone (the coordinator also refuses others).</summary>
    public bool CanAbort => Role == FederationRole.Engineer;
}
