using System.Globalization;
using Federated.Protos.V1;

namespace Federated.Coordinator.State;

/// <summary>What retention may remove from the database (finished rounds' participant rows, unreferenced adapter rows), and the audited removal.</summary>
internal sealed class RetentionStore(StateDatabase database)
{
    private const string PrunableAdaptersSql =
        """
        SELECT a.sha256 FROM adapters a
        WHERE a.created_at < @before
          AND a.sha256 NOT IN (SELECT adapter_sha256 FROM runs)
          AND NOT EXISTS (SELECT 1 FROM rounds r WHERE r.stage NOT IN (@done, @failed) AND r.adapter_sha256_before = a.sha256)
        """;

    /// <summary>
    /// Finds what retention may remove before <paramref name="cutoff"/>: participant rows of rounds that ended
    /// (completed or failed) before it, and adapters stored before it that are neither a run's current adapter (the
    /// latest of a running run, the final one of an ended run, which export needs) nor the start of a round in progress.
    /// </summary>
    public PrunePlan Plan(DateTimeOffset cutoff)
    {
        (string, object?)[] bounds = Bounds(cutoff);
        return database.Read(session =>
        {
            List<(string, int)> rounds = session.Query(
                """
                SELECT r.run_id, r.round FROM rounds r
                WHERE r.stage IN (@done, @failed) AND r.ended_at IS NOT NULL AND r.ended_at < @before
                  AND EXISTS (SELECT 1 FROM participants p WHERE p.run_id = r.run_id AND p.round = r.round)
                ORDER BY r.run_id, r.round
                """,
                r => (r.Text(0), r.Int(1)), bounds);
            List<string> adapters = session.Query(PrunableAdaptersSql + " ORDER BY a.sha256", r => r.Text(0), bounds);
            return new PrunePlan(cutoff, rounds, adapters);
        });
    }

    /// <summary>
    /// Deletes a plan's participant rows and adapter rows (re-checking that each adapter is still prunable) and appends
    /// one "retention.prune" audit entry naming them, in one transaction. Earlier audit entries, the rounds table and
    /// the privacy ledger are untouched, so the chain still verifies and every hash and charge stays on record.
    /// </summary>
    /// <returns>The adapters whose rows were removed (the caller deletes their files).</returns>
    public IReadOnlyList<string> Prune(PrunePlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return database.Write(work =>
        {
            int participantRows = 0;
            foreach ((string runId, int round) in plan.Rounds)
            {
                participantRows += work.Execute("DELETE FROM participants WHERE run_id = @run AND round = @round", ("@run", runId), ("@round", round));
            }
            var removed = new List<string>();
            foreach (string sha256 in plan.Adapters)
            {
                // Re-checked inside the transaction: a run may have come to point at it since the plan was made.
                if (work.Scalar<string>(PrunableAdaptersSql + " AND a.sha256 = @h", [.. Bounds(plan.Cutoff), ("@h", sha256)]) == sha256)
                {
                    work.Execute("DELETE FROM adapters WHERE sha256 = @h", ("@h", sha256));
                    removed.Add(sha256);
                }
            }
            work.Audit("coordinator", "retention.prune", new Dictionary<string, string>
            {
                ["cutoff"] = StateValues.Format(plan.Cutoff),
                ["rounds"] = string.Join(",", plan.Rounds.Select(r => r.RunId + ":" + r.Round.ToString(CultureInfo.InvariantCulture))),
                ["participant_rows"] = participantRows.ToString(CultureInfo.InvariantCulture),
                ["adapters"] = string.Join(",", removed),
            });
            return removed;
        });
    }

    private static (string, object?)[] Bounds(DateTimeOffset cutoff) =>
        [("@done", (int)RoundStage.Completed), ("@failed", (int)RoundStage.Failed), ("@before", StateValues.Format(cutoff))];
}
