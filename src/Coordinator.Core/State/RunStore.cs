using System.Globalization;
using System.Security.Cryptography;
using Federated.Protos.V1;

namespace Federated.Coordinator.State;

/// <summary>Runs: the accepted plan, the state an engineer sees, the current global adapter and how far the run got.</summary>
internal sealed class RunStore(StateDatabase database, BudgetStore budgets)
{
    private const string Columns =
        "run_id, plan, population, state, planned_epsilon, noise_multiplier, current_round, adapter_sha256, detail, created_by, created_at, updated_at";

    /// <summary>Records an accepted run (state PENDING) and audits who started it, in <paramref name="work"/>.</summary>
    public void Create(UnitOfWork work, string runId, byte[] plan, string population, double plannedEpsilon, double noiseMultiplier, string adapterSha256, string actor)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentException.ThrowIfNullOrEmpty(population);
        ArgumentNullException.ThrowIfNull(adapterSha256);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        string now = StateValues.Format(work.Now);
        work.Execute(
            $"INSERT INTO runs ({Columns}) VALUES (@run, @plan, @p, @state, @eps, @z, 0, @adapter, '', @by, @now, @now)",
            ("@run", runId), ("@plan", plan), ("@p", population), ("@state", (int)RunState.Pending), ("@eps", plannedEpsilon),
            ("@z", noiseMultiplier), ("@adapter", adapterSha256), ("@by", actor), ("@now", now));
        work.Audit(actor, "run.start", new Dictionary<string, string>
        {
            ["run_id"] = runId,
            ["population"] = population,
            ["planned_epsilon"] = plannedEpsilon.ToString("R", CultureInfo.InvariantCulture),
            ["noise_multiplier"] = noiseMultiplier.ToString("R", CultureInfo.InvariantCulture),
            ["plan_sha256"] = Convert.ToHexStringLower(SHA256.HashData(plan)),
        });
    }

    /// <inheritdoc cref="Create(UnitOfWork, string, byte[], string, double, double, string, string)"/>
    public void Create(string runId, byte[] plan, string population, double plannedEpsilon, double noiseMultiplier, string adapterSha256, string actor) =>
        database.Write(work => Create(work, runId, plan, population, plannedEpsilon, noiseMultiplier, adapterSha256, actor));

    /// <summary>A run by id; null when unknown.</summary>
    public RunRecord? Get(string runId)
    {
        ArgumentNullException.ThrowIfNull(runId);
        return database.Read(session => Read(session, "run_id = @run", ("@run", runId))).SingleOrDefault();
    }

    /// <summary>The runs that had not ended (PENDING or RUNNING) when the coordinator last stopped, oldest first.</summary>
    public IReadOnlyList<RunRecord> ListUnfinished() =>
        database.Read(session => Read(session, "state IN (@pending, @running)", ("@pending", (int)RunState.Pending), ("@running", (int)RunState.Running)));

    /// <summary>A run's highest round number, its released rounds and the epsilon after the last of them (from the ledger).</summary>
    public RunProgress Progress(string runId)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        return database.Read(session => session.Query(
            """
            SELECT (SELECT COALESCE(MAX(round), 0) FROM rounds WHERE run_id = @run),
                   (SELECT COUNT(*) FROM rounds WHERE run_id = @run AND stage = @completed),
                   (SELECT COALESCE((SELECT epsilon_after FROM ledger WHERE run_id = @run ORDER BY sequence DESC LIMIT 1), 0))
            """,
            r => new RunProgress(r.Int(0), r.Int(1), r.Real(2)),
            // Released rounds are the completed ones: a client-level round's charge commits with its completion, and a
            // record-only round has no client-level charge to count.
            ("@run", runId), ("@completed", (int)RoundStage.Completed)).Single());
    }

    /// <summary>Records a run's end (completed, aborted or failed) with the reason, audited, and releases what it reserved and did not spend.</summary>
    public void End(string runId, RunState runState, string detail, string actor)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(detail);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        if (runState is not (RunState.Completed or RunState.Aborted or RunState.Failed))
        {
            throw new ArgumentOutOfRangeException(nameof(runState), runState, "a run ends COMPLETED, ABORTED or FAILED");
        }
        database.Write(work =>
        {
            work.Execute("UPDATE runs SET state = @state, detail = @detail, updated_at = @now WHERE run_id = @run",
                ("@state", (int)runState), ("@detail", detail), ("@now", StateValues.Format(work.Now)), ("@run", runId));
            budgets.Release(work, runId);
            work.Audit(actor, "run.end", new Dictionary<string, string>
            {
                ["run_id"] = runId,
                ["state"] = runState.ToString(),
                ["detail"] = detail,
            });
        });
    }

    /// <summary>The run is RUNNING and at <paramref name="round"/> (a round of it opened), in <paramref name="work"/>.</summary>
    public void MarkRunning(UnitOfWork work, string runId, int round) =>
        work.Execute("UPDATE runs SET state = @state, current_round = @round, updated_at = @now WHERE run_id = @run",
            ("@state", (int)RunState.Running), ("@round", round), ("@now", StateValues.Format(work.Now)), ("@run", runId));

    /// <summary>The run's current global adapter is now <paramref name="adapterSha256"/> (a round of it completed), in <paramref name="work"/>.</summary>
    public void SetAdapter(UnitOfWork work, string runId, string adapterSha256) =>
        work.Execute("UPDATE runs SET adapter_sha256 = @adapter, updated_at = @now WHERE run_id = @run",
            ("@adapter", adapterSha256), ("@now", StateValues.Format(work.Now)), ("@run", runId));

    private static List<RunRecord> Read(StateSession session, string where, params (string Name, object? Value)[] parameters) =>
        session.Query(
            $"SELECT {Columns} FROM runs WHERE {where} ORDER BY created_at, run_id",
            r => new RunRecord(r.Text(0), r.Blob(1), r.Text(2), (RunState)r.Int(3), r.Real(4), r.Real(5), r.Int(6), r.Text(7), r.Text(8), r.Text(9), r.Time(10), r.Time(11)),
            parameters);
}
