using Federated.Aggregation.Privacy;

namespace Federated.Coordinator.State;

/// <summary>The privacy ledger: one row per released round, never two (UNIQUE per run and round), never edited.</summary>
internal sealed class LedgerStore(StateDatabase database)
{
    /// <summary>
    /// Charges one released round inside <paramref name="work"/>, after the population's ledger, loaded in the same
    /// transaction, accepted it: a charge its run's reservation covers is always accepted; any other (a run that
    /// reserved less, or none) is refused when what is spent and reserved would then exceed the budget. A second charge
    /// for the same round fails (UNIQUE).
    /// </summary>
    /// <exception cref="BudgetRefusedException">The charge would overspend the budget, or the population takes no more charges.</exception>
    public LedgerRecord Charge(UnitOfWork work, LedgerRecord charge)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentNullException.ThrowIfNull(charge);
        RdpCharge rdp = charge.Rdp ?? throw new ArgumentException("a charge needs the round's RDP vector", nameof(charge));
        PopulationLedger population = PopulationLedger.Require(work, charge.Population);
        PrivacyLedger ledger = population.Composable;
        if (!ledger.Orders.SequenceEqual(rdp.Orders))
        {
            throw new ArgumentException($"the charge's RDP orders differ from population '{charge.Population}''s; they cannot be composed", nameof(charge));
        }
        PrivacyBalance before = ledger.Balance;
        ChargeResult result = ledger.Charge(charge.RunId, charge.Round, [.. rdp.Values]);
        if (result.Outcome == ChargeOutcome.Refused)
        {
            throw new BudgetRefusedException(
                $"round {charge.Round} of run '{charge.RunId}' would overspend population '{charge.Population}': its budget {before.Budget:G6} at delta " +
                $"{before.Delta:G6} has {before.Remaining:G6} left (spent {before.Spent:G6}, reserved {before.Reserved:G6}) and the run's reservation does not cover the round; nothing was released");
        }
        // AlreadyCharged falls through to the INSERT, whose UNIQUE constraint refuses the second row.
        string at = StateValues.Format(work.Now);
        long sequence = work.Scalar<long>(
            """
            INSERT INTO ledger (run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at, rdp, adjacency)
            VALUES (@run, @round, @p, @after, @d_eps, @delta, @mech, @z, @c, @n, @at, @rdp, @adj) RETURNING sequence
            """,
            ("@run", charge.RunId), ("@round", charge.Round), ("@p", charge.Population), ("@after", charge.EpsilonAfter),
            ("@d_eps", charge.EpsilonDelta), ("@delta", charge.Delta), ("@mech", charge.Mechanism), ("@z", charge.NoiseMultiplier),
            ("@c", charge.ClipNorm), ("@n", charge.Participants), ("@at", at), ("@rdp", RdpBlob.Encode(rdp.Orders, rdp.Values)),
            ("@adj", charge.Adjacency ?? PrivacyUnitNames.Name(PrivacyUnitNames.ProductAdjacency)));
        return charge with { Sequence = sequence, ChargedAt = StateValues.ParseTime(at) };
    }

    /// <summary>The charges of a run and/or a population (null or empty: all), oldest first.</summary>
    public IReadOnlyList<LedgerRecord> List(string? runId, string? population) =>
        database.Read(session => session.Query(
            """
            SELECT sequence, run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at, rdp, adjacency
            FROM ledger WHERE (@run = '' OR run_id = @run) AND (@p = '' OR population = @p) ORDER BY sequence
            """,
            r => new LedgerRecord(r.Long(0), r.Text(1), r.Int(2), r.Text(3), r.Real(4), r.Real(5), r.Real(6), r.Int(7), r.Real(8), r.Real(9), r.Int(10), r.Time(11),
                Rdp(r.IsDBNull(12) ? null : r.Blob(12)), r.OptionalText(13)),
            ("@run", runId ?? ""), ("@p", population ?? "")));

    private static RdpCharge? Rdp(byte[]? blob)
    {
        if (blob is null)
        {
            return null;
        }
        (double[] orders, double[] values) = RdpBlob.Decode(blob);
        return new RdpCharge(orders, values);
    }
}
