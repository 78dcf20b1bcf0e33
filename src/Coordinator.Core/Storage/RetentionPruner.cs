using System.Data.Common;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Storage;

/// <summary>What one retention pass removed.</summary>
internal sealed record RetentionResult(DateTimeOffset Cutoff, int Rounds, IReadOnlyList<string> Adapters);

/// <summary>
/// Enforces the retention setting (Coordinator:RetentionDays, `serve --retention-days N`): at start-up and then hourly,
/// rounds that ended more than N days ago lose their participant rows and their adapters (files and rows), while the
/// rounds table, the privacy ledger and the audit chain keep every hash and charge; the pass itself is audited.
/// Every run's current adapter is kept whatever its age: the latest of a running run (the next round starts from it)
/// and the final one of an ended run (export signs and ships it).
/// </summary>
internal sealed class RetentionPruner(CoordinatorState state, AdapterStore adapters, CoordinatorOptions options, TimeProvider time, ILogger<RetentionPruner> logger, Leadership? leadership = null)
    : BackgroundService
{
    /// <summary>Time between passes; rounds expire by the day, so hourly is ample.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromHours(1);

    /// <summary>One pass now; null when retention is off (0 days).</summary>
    public RetentionResult? PruneNow()
    {
        if (options.RetentionDays == 0)
        {
            return null;
        }
        DateTimeOffset cutoff = time.GetUtcNow() - TimeSpan.FromDays(options.RetentionDays);
        PrunePlan plan = state.Retention.Plan(cutoff);
        if (plan.IsEmpty)
        {
            return new RetentionResult(cutoff, 0, []);
        }
        // Rows first, then files: a crash in between leaves an unreferenced file, never a referenced adapter without one.
        IReadOnlyList<string> removed = state.Retention.Prune(plan);
        foreach (string sha256 in removed)
        {
            adapters.Delete(sha256);
        }
        CoordinatorLog.RetentionPruned(logger, plan.Rounds.Count, removed.Count, cutoff);
        return new RetentionResult(cutoff, plan.Rounds.Count, removed);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.RetentionDays == 0)
        {
            return;
        }
        if (leadership is not null)
        {
            // A standby writes nothing: pruning starts once this coordinator leads.
            await leadership.WhenLeading(stoppingToken);
        }
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                PruneNow();
            }
            catch (Exception ex) when (ex is IOException or DbException or UnauthorizedAccessException)
            {
                // The next pass retries; serving rounds matters more than pruning on time.
                CoordinatorLog.RetentionFailed(logger, ex.Message);
            }
            await Task.Delay(Interval, time, stoppingToken);
        }
    }
}
