using System.Globalization;

namespace Federated.Coordinator.State;

/// <summary>The officers' privacy budgets per population, with what the ledger has charged against each.</summary>
internal sealed class BudgetStore(StateDatabase database)
{
    /// <summary>Sets a population's budget; audited with the officer's identity.</summary>
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

    /// <summary>The population's budget with the epsilon charged so far; null when none was set.</summary>
    public BudgetRecord? Get(string population)
    {
        ArgumentException.ThrowIfNullOrEmpty(population);
        return database.Read(session => Get(session, population));
    }

    /// <inheritdoc cref="Get(string)"/>
    public BudgetRecord? Get(StateSession session, string population) =>
        session.Query(
            """
            SELECT b.population, b.epsilon, b.delta, b.set_by, b.set_at,
                   (SELECT COALESCE(SUM(l.epsilon_delta), 0) FROM ledger l WHERE l.population = b.population)
            FROM budgets b WHERE b.population = @p
            """,
            r => new BudgetRecord(r.Text(0), r.Real(1), r.Real(2), r.Real(5), r.Text(3), r.Time(4)),
            ("@p", population)).SingleOrDefault();

    /// <summary>The population's budget; refused when an officer never set one.</summary>
    /// <exception cref="BudgetRefusedException">No budget is set for <paramref name="population"/>.</exception>
    public BudgetRecord Require(StateSession session, string population) =>
        Get(session, population)
            ?? throw new BudgetRefusedException($"no budget is set for population '{population}'; an officer sets one with 'budget set'");

    /// <inheritdoc cref="Require(StateSession, string)"/>
    public BudgetRecord Require(string population) => database.Read(session => Require(session, population));

    /// <summary>
    /// Refuses a plan that needs more than the population has left (or a population without a budget), naming the
    /// numbers. Called once before any work and again inside the transaction that records the run, where a reservation
    /// of the planned epsilon belongs once budgets hold reservations.
    /// </summary>
    /// <exception cref="BudgetRefusedException">No budget, or not enough of it left.</exception>
    public BudgetRecord RequireAffordable(StateSession session, string population, double plannedEpsilon, uint rounds)
    {
        ArgumentNullException.ThrowIfNull(session);
        BudgetRecord budget = Require(session, population);
        double remaining = budget.Epsilon - budget.EpsilonSpent;
        if (plannedEpsilon > remaining)
        {
            throw new BudgetRefusedException(
                $"the plan needs epsilon {plannedEpsilon:G6} over {rounds} rounds but population '{population}' has {remaining:G6} left of its budget {budget.Epsilon:G6} (spent {budget.EpsilonSpent:G6})");
        }
        return budget;
    }

    /// <inheritdoc cref="RequireAffordable(StateSession, string, double, uint)"/>
    public BudgetRecord RequireAffordable(string population, double plannedEpsilon, uint rounds) =>
        database.Read(session => RequireAffordable(session, population, plannedEpsilon, rounds));
}
