using System.Globalization;
using Federated.Aggregation.Privacy;

namespace Federated.Coordinator.State;

/// <summary>
/// The officers' privacy budgets per population and the reservations runs hold against them. Every decision (a budget
/// change, a reservation) is made by the population's <see cref="PopulationLedger"/> loaded inside the transaction that
/// writes it, so two runs starting at once are serialized by the database and never both spend the same epsilon.
/// </summary>
internal sealed class BudgetStore(StateDatabase database)
{
    /// <summary>
    /// Sets a population's budget; audited with the officer's identity. A budget below what the population has already
    /// spent and reserved (converted at the new delta) is refused naming both numbers, and nothing is written.
    /// </summary>
    /// <exception cref="BudgetRefusedException">The new budget is below what is spent and reserved.</exception>
    public BudgetRecord Set(string population, double epsilon, double delta, string actor)
    {
        ArgumentException.ThrowIfNullOrEmpty(population);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        if (!double.IsFinite(epsilon) || epsilon <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be a finite number > 0");
        }
        if (!double.IsFinite(delta) || delta <= 0 || delta >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(delta), delta, "delta must be in (0, 1)");
        }
        return database.Write(work =>
        {
            if (PopulationLedger.Load(work, population)?.Ledger is { } ledger)
            {
                BudgetChangeResult change = ledger.ChangeBudget(new PrivacyBudget(epsilon, delta));
                if (!change.Changed)
                {
                    throw new BudgetRefusedException(change.Refusal!);
                }
            }
            work.Execute(
                """
                INSERT INTO budgets (population, epsilon, delta, set_by, set_at) VALUES (@p, @e, @d, @by, @at)
                ON CONFLICT (population) DO UPDATE SET epsilon = @e, delta = @d, set_by = @by, set_at = @at
                """,
                ("@p", population), ("@e", epsilon), ("@d", delta), ("@by", actor), ("@at", StateValues.Format(work.Now)));
            work.Audit(actor, "budget.set", new Dictionary<string, string>
            {
                ["population"] = population,
                ["epsilon"] = epsilon.ToString("R", CultureInfo.InvariantCulture),
                ["delta"] = delta.ToString("R", CultureInfo.InvariantCulture),
            });
            return Get(work, population)!;
        });
    }

    /// <summary>The population's budget with what is spent, reserved and remaining; null when none was set.</summary>
    public BudgetRecord? Get(string population)
    {
        ArgumentException.ThrowIfNullOrEmpty(population);
        return database.Read(session => Get(session, population));
    }

    /// <inheritdoc cref="Get(string)"/>
    public BudgetRecord? Get(StateSession session, string population) => PopulationLedger.Load(session, population)?.Budget;

    /// <summary>Every population's budget with what is spent, reserved and remaining, in population order.</summary>
    public IReadOnlyList<BudgetRecord> List() => database.Read(session =>
        session.Query("SELECT population FROM budgets ORDER BY population", reader => reader.Text(0))
            .Select(population => PopulationLedger.Load(session, population)?.Budget)
            .OfType<BudgetRecord>()
            .ToList());

    /// <summary>The population's budget; refused when an officer never set one.</summary>
    /// <exception cref="BudgetRefusedException">No budget is set for <paramref name="population"/>.</exception>
    public BudgetRecord Require(string population) => database.Read(session => PopulationLedger.Require(session, population).Budget);

    /// <summary>
    /// Refuses a plan whose whole planned RDP does not fit next to what the population has spent and reserved, naming
    /// the numbers; writes nothing. StartRun calls it before any work, then <see cref="Reserve"/> decides for good.
    /// </summary>
    /// <exception cref="BudgetRefusedException">No budget, legacy charges, or not enough of it left.</exception>
    public BudgetRecord RequireAffordable(string population, PrivacyPlan plan) =>
        database.Read(session =>
        {
            PopulationLedger loaded = PopulationLedger.Require(session, population);
            PrivacyLedger ledger = loaded.Composable;
            double[] planned = plan.RdpAfter(plan.Parameters.Rounds);
            if (!ledger.CanAfford(planned))
            {
                throw Refusal(population, plan, ledger.Balance, ledger.Preview(planned).Epsilon);
            }
            return loaded.Budget;
        });

    /// <summary>
    /// Reserves the run's planned RDP (all its rounds) in <paramref name="work"/>, the transaction that records the run:
    /// refused, naming the numbers, when it does not fit next to what is spent and reserved. The reservation is
    /// released when the run ends (<see cref="Release"/>); its rounds' charges turn it into spend meanwhile.
    /// </summary>
    /// <exception cref="BudgetRefusedException">No budget, legacy charges, or not enough of it left.</exception>
    public PrivacyBalance Reserve(UnitOfWork work, string runId, string population, PrivacyPlan plan)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(plan);
        PrivacyLedger ledger = PopulationLedger.Require(work, population).Composable;
        double[] planned = plan.RdpAfter(plan.Parameters.Rounds);
        PrivacyBalance before = ledger.Balance;
        double committed = ledger.Preview(planned).Epsilon;
        ReservationResult result = ledger.Reserve(runId, planned);
        if (result.Outcome != ReservationOutcome.Reserved)
        {
            throw result.Outcome == ReservationOutcome.Refused
                ? Refusal(population, plan, before, committed)
                : new InvalidOperationException($"run '{runId}' already holds a reservation");
        }
        work.Execute("INSERT INTO reservations (run_id, population, planned_rdp, reserved_at) VALUES (@run, @p, @rdp, @at)",
            ("@run", runId), ("@p", population), ("@rdp", RdpBlob.Encode(plan.Orders, planned)), ("@at", StateValues.Format(work.Now)));
        return result.Balance;
    }

    /// <summary>Releases what the run reserved and did not spend (it ended: completed, aborted or failed), in <paramref name="work"/>.</summary>
    public void Release(UnitOfWork work, string runId)
    {
        ArgumentNullException.ThrowIfNull(work);
        work.Execute("UPDATE reservations SET released_at = @at WHERE run_id = @run AND released_at IS NULL",
            ("@at", StateValues.Format(work.Now)), ("@run", runId));
    }

    private static BudgetRefusedException Refusal(string population, PrivacyPlan plan, PrivacyBalance balance, double committed)
    {
        PrivacyPlanParameters p = plan.Parameters;
        return new BudgetRefusedException(
            $"the plan needs epsilon {plan.Epsilon.Epsilon:G6} at delta {p.Delta:G6} over {p.Rounds} rounds but population '{population}' has " +
            $"{balance.Remaining:G6} left of its budget {balance.Budget:G6} at delta {balance.Delta:G6} (spent {balance.Spent:G6}, reserved {balance.Reserved:G6}); " +
            $"with this run it would commit {committed:G6} ({plan.PrivacyUnit}-level, {plan.AdjacencyName})");
    }
}
