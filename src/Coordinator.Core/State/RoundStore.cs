using System.Globalization;
using Federated.Protos.V1;

namespace Federated.Coordinator.State;

/// <summary>
/// Rounds and their participants: a round's start (who was selected), declines, its completion (the one transaction
/// that releases and charges it) or failure, and the record of ended rounds.
/// </summary>
public sealed class RoundStore
{
    private readonly StateDatabase _database;
    private readonly RunStore _runs;
    private readonly LedgerStore _ledger;
    private readonly AdapterRecordStore _adapters;
    private readonly ClientStore _clients;
    private readonly Lock _gate = new();

    // Declines that arrived before the round's rows were written (the round is opened in memory, then recorded):
    // Start writes these participants as declined. Guarded by _gate.
    private readonly HashSet<(string RunId, int Round, string ClientId)> _earlyDeclines = [];

    internal RoundStore(StateDatabase database, RunStore runs, LedgerStore ledger, AdapterRecordStore adapters, ClientStore clients)
    {
        _database = database;
        _runs = runs;
        _ledger = ledger;
        _adapters = adapters;
        _clients = clients;
    }

    /// <summary>Records a round's start and its selected participants (by index), audited with the participant list.</summary>
    internal void Start(string runId, int round, IReadOnlyDictionary<string, int> participants, string adapterBefore)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentOutOfRangeException.ThrowIfLessThan(round, 1);
        ArgumentNullException.ThrowIfNull(participants);
        lock (_gate)
        {
            _database.Write(work =>
            {
                string now = StateValues.Format(work.Now);
                work.Execute(
                    "INSERT INTO rounds (run_id, round, stage, selected, survivors, adapter_sha256_before, started_at) VALUES (@run, @round, @stage, @n, 0, @adapter, @now)",
                    ("@run", runId), ("@round", round), ("@stage", (int)RoundStage.Manifest), ("@n", participants.Count), ("@adapter", adapterBefore), ("@now", now));
                foreach ((string clientId, int index) in participants)
                {
                    ParticipantStatus status = _earlyDeclines.Contains((runId, round, clientId)) ? ParticipantStatus.Declined : ParticipantStatus.Selected;
                    work.Execute(
                        "INSERT INTO participants (run_id, round, client_id, participant_index, status, updated_at) VALUES (@run, @round, @id, @i, @status, @now)",
                        ("@run", runId), ("@round", round), ("@id", clientId), ("@i", index), ("@status", status.ToStored()), ("@now", now));
                }
                _runs.MarkRunning(work, runId, round);
                work.Audit("coordinator", "round.start", new Dictionary<string, string>
                {
                    ["run_id"] = runId,
                    ["round"] = round.ToString(CultureInfo.InvariantCulture),
                    ["participants"] = string.Join(",", participants.OrderBy(p => p.Value).Select(p => p.Key)),
                });
            });
            // Forgotten only once the rows that carry them committed.
            foreach (string clientId in participants.Keys)
            {
                _earlyDeclines.Remove((runId, round, clientId));
            }
        }
    }

    /// <summary>
    /// Records that a selected participant declined a round: its row becomes declined and the audit chain names the
    /// reason and the client's rule, in one transaction. False when no participant row was there to mark yet: the audit
    /// entry is appended anyway, and a later <see cref="Start"/> for that round writes the participant as declined.
    /// </summary>
    internal bool RecordDecline(string runId, int round, string clientId, string reason, string rule, string detail)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentException.ThrowIfNullOrEmpty(clientId);
        ArgumentException.ThrowIfNullOrEmpty(reason);
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentNullException.ThrowIfNull(detail);
        lock (_gate)
        {
            bool marked = _database.Write(work =>
            {
                int updated = work.Scalar<int>(
                    "UPDATE participants SET status = @declined, updated_at = @now WHERE run_id = @run AND round = @round AND client_id = @id RETURNING 1",
                    ("@declined", ParticipantStatus.Declined.ToStored()), ("@now", StateValues.Format(work.Now)), ("@run", runId), ("@round", round), ("@id", clientId));
                // The audit entry is written either way: it is the durable record even if the round's rows are not yet in.
                work.Audit(clientId, "round.decline", new Dictionary<string, string>
                {
                    ["run_id"] = runId,
                    ["round"] = round.ToString(CultureInfo.InvariantCulture),
                    ["client_id"] = clientId,
                    ["reason"] = reason,
                    ["rule"] = rule,
                    ["detail"] = detail,
                });
                return updated == 1;
            });
            if (!marked)
            {
                _earlyDeclines.Add((runId, round, clientId));
            }
            return marked;
        }
    }

    /// <summary>A round's participants and their status, by client id.</summary>
    internal IReadOnlyDictionary<string, ParticipantStatus> Participants(string runId, int round) =>
        _database.Read(session => session.Query(
            "SELECT client_id, status FROM participants WHERE run_id = @run AND round = @round",
            r => (Client: r.Text(0), Status: ParticipantStatusText.Parse(r.Text(1))),
            ("@run", runId), ("@round", round))).ToDictionary(p => p.Client, p => p.Status, StringComparer.Ordinal);

    /// <summary>
    /// Completes a round in one transaction: the new adapter's row, every participant's final status (a recorded decline
    /// is kept), the round's end with its survivor count, the ledger charge (re-checked against the population's budget
    /// and UNIQUE per round, so never an overspend and never twice), the contributors' own charges and their population,
    /// the run's current adapter and the audit entries. Nothing is released before this returns, and nothing of it if it
    /// throws.
    /// </summary>
    /// <exception cref="BudgetRefusedException">The charge would overspend the budget, or a contributor belongs to another population.</exception>
    internal LedgerRecord Complete(RoundCompletion completion)
    {
        ArgumentNullException.ThrowIfNull(completion);
        LedgerRecord charge = completion.Charge;
        string adapterAfter = completion.Adapter.Sha256;
        ArgumentException.ThrowIfNullOrEmpty(adapterAfter);
        return _database.Write(work =>
        {
            string now = StateValues.Format(work.Now);
            int updated = work.Scalar<int>(
                "UPDATE rounds SET stage = @stage, survivors = @n, adapter_sha256_after = @adapter, ended_at = @now WHERE run_id = @run AND round = @round AND stage NOT IN (@done, @failed) RETURNING 1",
                ("@stage", (int)RoundStage.Completed), ("@n", charge.Participants), ("@adapter", adapterAfter), ("@now", now),
                ("@run", charge.RunId), ("@round", charge.Round), ("@done", (int)RoundStage.Completed), ("@failed", (int)RoundStage.Failed));
            if (updated != 1)
            {
                throw new InvalidOperationException($"round {charge.Round} of run {charge.RunId} is not in progress; it cannot be completed");
            }
            _adapters.Record(work, completion.Adapter, charge.RunId, charge.Round, "coordinator");
            foreach ((string clientId, ParticipantStatus status) in completion.Statuses)
            {
                work.Execute(
                    "UPDATE participants SET status = @s, updated_at = @now WHERE run_id = @run AND round = @round AND client_id = @id AND status <> @declined",
                    ("@s", status.ToStored()), ("@now", now), ("@run", charge.RunId), ("@round", charge.Round), ("@id", clientId),
                    ("@declined", ParticipantStatus.Declined.ToStored()));
            }
            // Re-checked against the population's budget inside this transaction: a refused overspend rolls the whole
            // completion back, so nothing of the round is released.
            // A record-only run's aggregate carries no client noise: there is nothing to charge at the client level, to the
            // population or to each contributor (client_charges name client-level charges).
            LedgerRecord charged = charge;
            if (completion.ClientLevel)
            {
                charged = _ledger.Charge(work, charge);
                _clients.RecordContributions(work, charge.RunId, charge.Round, charge.Population,
                    [.. completion.Statuses.Where(p => p.Value == ParticipantStatus.Uploaded).Select(p => p.Key)]);
            }
            _runs.SetAdapter(work, charge.RunId, adapterAfter);
            work.Audit("coordinator", "round.complete", new Dictionary<string, string>
            {
                ["run_id"] = charge.RunId,
                ["round"] = charge.Round.ToString(CultureInfo.InvariantCulture),
                ["survivors"] = charge.Participants.ToString(CultureInfo.InvariantCulture),
                ["adapter_sha256"] = adapterAfter,
                ["epsilon_after"] = charge.EpsilonAfter.ToString("R", CultureInfo.InvariantCulture),
            });
            return charged;
        });
    }

    /// <summary>Ends a round without a release: no ledger charge, the reason audited.</summary>
    internal void Fail(string runId, int round, string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(reason);
        _database.Write(work =>
        {
            work.Execute("UPDATE rounds SET stage = @stage, ended_at = @now WHERE run_id = @run AND round = @round",
                ("@stage", (int)RoundStage.Failed), ("@now", StateValues.Format(work.Now)), ("@run", runId), ("@round", round));
            AuditFailure(work, runId, round, reason);
        });
    }

    /// <summary>
    /// Marks every round of the run that had not ended as FAILED (a coordinator that stopped mid-round released
    /// nothing from it and charged nothing), each audited; returns the rounds so marked.
    /// </summary>
    internal IReadOnlyList<int> FailInterrupted(string runId, string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentException.ThrowIfNullOrEmpty(reason);
        return _database.Write(work =>
        {
            List<int> failed = work.Query(
                "UPDATE rounds SET stage = @failed, ended_at = @now WHERE run_id = @run AND stage NOT IN (@done, @failed) RETURNING round",
                r => r.Int(0),
                ("@failed", (int)RoundStage.Failed), ("@done", (int)RoundStage.Completed), ("@now", StateValues.Format(work.Now)), ("@run", runId));
            failed.Sort();
            foreach (int round in failed)
            {
                AuditFailure(work, runId, round, reason);
            }
            return failed;
        });
    }

    /// <summary>A round's stage as recorded; null when unknown.</summary>
    internal RoundStage? Stage(string runId, int round) =>
        _database.Read(session => session.Query("SELECT stage FROM rounds WHERE run_id = @run AND round = @round", r => (RoundStage?)(RoundStage)r.Int(0),
            ("@run", runId), ("@round", round)).SingleOrDefault());

    /// <summary>
    /// The run's rounds numbered above <paramref name="after"/> that have ended (released or failed), in order and without
    /// gaps: a round still in progress hides the ones after it until it ends.
    /// </summary>
    public IReadOnlyList<EndedRound> ListEnded(string runId, int after)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        List<EndedRound> rounds = _database.Read(session => session.Query(
            "SELECT round, selected, survivors, adapter_sha256_after, started_at, ended_at FROM rounds WHERE run_id = @run AND round > @after AND ended_at IS NOT NULL ORDER BY round",
            r => new EndedRound(r.Int(0), r.Int(1), r.Int(2), r.OptionalText(3), r.Time(4), r.Time(5)),
            ("@run", runId), ("@after", after)));
        int expected = after + 1;
        return [.. rounds.TakeWhile(r => r.Round == expected++)];
    }

    private static void AuditFailure(UnitOfWork work, string runId, int round, string reason) =>
        work.Audit("coordinator", "round.fail", new Dictionary<string, string>
        {
            ["run_id"] = runId,
            ["round"] = round.ToString(CultureInfo.InvariantCulture),
            ["reason"] = reason,
        });
}
