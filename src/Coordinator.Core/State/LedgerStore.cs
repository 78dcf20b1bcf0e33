namespace Federated.Coordinator.State;

/// <summary>The privacy ledger: one row per released round, never two (UNIQUE per run and round), never edited.</summary>
internal sealed class LedgerStore(StateDatabase database)
{
    /// <summary>Charges one released round inside <paramref name="work"/>; a second charge for the same round fails (UNIQUE).</summary>
    public LedgerRecord Charge(UnitOfWork work, LedgerRecord charge)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentNullException.ThrowIfNull(charge);
        string at = StateValues.Format(work.Now);
        long sequence = work.Scalar<long>(
            """
            INSERT INTO ledger (run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at)
            VALUES (@run, @round, @p, @after, @d_eps, @delta, @mech, @z, @c, @n, @at) RETURNING sequence
            """,
            ("@run", charge.RunId), ("@round", charge.Round), ("@p", charge.Population), ("@after", charge.EpsilonAfter),
            ("@d_eps", charge.EpsilonDelta), ("@delta", charge.Delta), ("@mech", charge.Mechanism), ("@z", charge.NoiseMultiplier),
            ("@c", charge.ClipNorm), ("@n", charge.Participants), ("@at", at));
        return charge with { Sequence = sequence, ChargedAt = StateValues.ParseTime(at) };
    }

    /// <summary>The charges of a run and/or a population (null or empty: all), oldest first.</summary>
    public IReadOnlyList<LedgerRecord> List(string? runId, string? population) =>
        database.Read(session => session.Query(
            """
            SELECT sequence, run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at
            FROM ledger WHERE (@run = '' OR run_id = @run) AND (@p = '' OR population = @p) ORDER BY sequence
            """,
            r => new LedgerRecord(r.Long(0), r.Text(1), r.Int(2), r.Text(3), r.Real(4), r.Real(5), r.Real(6), r.Int(7), r.Real(8), r.Real(9), r.Int(10), r.Time(11)),
            ("@run", runId ?? ""), ("@p", population ?? "")));
}
