using Federated.Coordinator.Cli;
using Federated.Protos.V1;
using Federated.Trust;
using Grpc.Core;

namespace Federated.Coordinator.Dashboard;

/// <summary>
/// Reads what the dashboard shows over the admin API with the dashboard's identity, one poll at a time (polls are
/// serialized: the audit follower is incremental). A section the role may not read comes back PERMISSION_DENIED from
/// the coordinator and is shown as "not available to role X"; nothing is fetched around the coordinator's checks.
/// </summary>
internal sealed class DashboardReader(AdminConnection connection, TimeProvider time) : IDisposable
{
    /// <summary>
    /// A snapshot younger than this is served again: several open tabs cost the coordinator one poll, not one each,
    /// and the identity's rate limit at the coordinator is left to its owner's CLI.
    /// </summary>
    public static readonly TimeSpan ReuseWithin = TimeSpan.FromSeconds(1);

    private readonly SemaphoreSlim _poll = new(1, 1);
    // A run that ended never changes again: its last status is kept instead of asked for on every poll.
    private readonly Dictionary<string, RunStatus> _ended = new(StringComparer.Ordinal);
    private DashboardSnapshot? _last;
    private readonly AuditFollower _audit = new();
    private readonly FederationRole _role = connection.Role ?? throw new UsageException("--identity carries no federation role (engineer or officer)");
    private string? _notice;

    public FederationRole Role => _role;

    /// <summary>One line shown above the sections once (the outcome of the last abort).</summary>
    public void Notify(string notice)
    {
        Volatile.Write(ref _notice, notice);
        Volatile.Write(ref _last, null); // the next read shows the notice and the run's new state
    }

    public async Task<DashboardSnapshot> ReadAsync(CancellationToken cancellationToken)
    {
        await _poll.WaitAsync(cancellationToken);
        try
        {
            if (Volatile.Read(ref _last) is { } last && time.GetUtcNow() - last.ReadAt < ReuseWithin)
            {
                return last;
            }
            string? auditRefusal = await Try(() => _audit.PollAsync(connection, cancellationToken));
            var runs = new List<DashboardRun>();
            foreach (RunHistory history in _audit.Runs)
            {
                if (_ended.TryGetValue(history.RunId, out RunStatus? final))
                {
                    runs.Add(new DashboardRun(history, final, null));
                    continue;
                }
                RunStatus? status = null;
                string? problem = await Try(async () =>
                    status = await connection.CallAsync(o => connection.Admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = history.RunId }, o), cancellationToken));
                if (status?.State is RunState.Completed or RunState.Aborted or RunState.Failed)
                {
                    _ended[history.RunId] = status;
                }
                runs.Add(new DashboardRun(history, status, problem));
            }
            ListClientsResponse? clients = null;
            string? clientsRefusal = await Try(async () =>
                clients = await connection.CallAsync(o => connection.Admin.ListClientsAsync(new ListClientsRequest(), o), cancellationToken));
            (IReadOnlyList<Budget>? budgets, string? budgetsRefusal) = await BudgetsAsync(cancellationToken);
            DashboardSnapshot snapshot = new(
                connection.Address, connection.Name, _role, time.GetUtcNow(),
                auditRefusal is null ? Section<IReadOnlyList<DashboardRun>>.Of(runs) : Section<IReadOnlyList<DashboardRun>>.Refused(auditRefusal),
                clients is not null ? Section<IReadOnlyList<ClientInfo>>.Of([.. clients.Clients]) : Section<IReadOnlyList<ClientInfo>>.Refused(clientsRefusal!),
                budgets is not null ? Section<IReadOnlyList<Budget>>.Of(budgets) : Section<IReadOnlyList<Budget>>.Refused(budgetsRefusal!),
                auditRefusal is null ? Section<IReadOnlyList<AuditLine>>.Of(_audit.Tail) : Section<IReadOnlyList<AuditLine>>.Refused(auditRefusal),
                _audit.Problem, _audit.HeadSequence, _audit.HeadHash, Volatile.Read(ref _notice));
            Volatile.Write(ref _last, snapshot);
            return snapshot;
        }
        finally
        {
            _poll.Release();
        }
    }

    /// <summary>Aborts a run as this identity (the coordinator checks the role and records the actor).</summary>
    public async Task<string> AbortAsync(string runId, CancellationToken cancellationToken)
    {
        AbortRunResponse response;
        try
        {
            response = await connection.CallAsync(
                o => connection.Admin.AbortRunAsync(new AbortRunRequest { RunId = runId, Reason = "aborted from the dashboard" }, o), cancellationToken);
        }
        catch (AdminCallException ex)
        {
            return $"abort of run {runId} refused: {ex.Message}";
        }
        return response.Status.State == RunState.Aborted
            ? $"run {runId} aborted"
            : $"run {runId} had already ended ({Rounds.WireNames.State(response.Status.State)}); nothing was aborted";
    }

    /// <summary>The budget of every population a run was started in (GetBudget is per population; there is no listing).</summary>
    private async Task<(IReadOnlyList<Budget>?, string?)> BudgetsAsync(CancellationToken cancellationToken)
    {
        var budgets = new List<Budget>();
        string[] populations = [.. _audit.Runs.Select(r => r.Population).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];
        // With no run yet the default population is asked, so a role that may not read budgets learns it at once.
        foreach (string population in populations.Length == 0 ? [""] : populations)
        {
            try
            {
                budgets.Add(await connection.CallAsync(o => connection.Admin.GetBudgetAsync(new GetBudgetRequest { Population = population }, o), cancellationToken));
            }
            catch (AdminCallException ex) when (ex.Status == StatusCode.NotFound)
            {
                // No budget set for this population (yet): nothing to show for it.
            }
            catch (AdminCallException ex)
            {
                return (null, Refusal(ex));
            }
        }
        return (budgets, null);
    }

    private async Task<string?> Try(Func<Task> call)
    {
        try
        {
            await call();
            return null;
        }
        catch (AdminCallException ex)
        {
            return Refusal(ex);
        }
    }

    private string Refusal(AdminCallException ex) => ex.Status == StatusCode.PermissionDenied
        ? $"not available to role {FederationRoleExtension.Name(_role)}"
        : ex.Message;

    public void Dispose() => _poll.Dispose();
}
