using System.Buffers.Binary;
using Federated.Aggregation.Privacy;

namespace Federated.Coordinator.State;

/// <summary>An RDP vector as the state stores it: (order, value) pairs of little-endian doubles, so a vector carries its orders.</summary>
internal static class RdpBlob
{
    public static byte[] Encode(IReadOnlyList<double> orders, IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(orders);
        ArgumentNullException.ThrowIfNull(values);
        if (orders.Count == 0 || orders.Count != values.Count)
        {
            throw new ArgumentException($"an RDP vector needs one value per order ({values.Count} values for {orders.Count} orders)", nameof(values));
        }
        byte[] blob = new byte[16 * orders.Count];
        for (int i = 0; i < orders.Count; i++)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(blob.AsSpan(16 * i), orders[i]);
            BinaryPrimitives.WriteDoubleLittleEndian(blob.AsSpan(16 * i + 8), values[i]);
        }
        return blob;
    }

    /// <exception cref="InvalidDataException">The blob is not a list of orders above 1 with values of at least 0.</exception>
    public static (double[] Orders, double[] Values) Decode(byte[] blob)
    {
        ArgumentNullException.ThrowIfNull(blob);
        if (blob.Length == 0 || blob.Length % 16 != 0)
        {
            throw new InvalidDataException($"a stored RDP vector has {blob.Length} bytes; it must be a positive multiple of 16");
        }
        var orders = new double[blob.Length / 16];
        var values = new double[orders.Length];
        for (int i = 0; i < orders.Length; i++)
        {
            orders[i] = BinaryPrimitives.ReadDoubleLittleEndian(blob.AsSpan(16 * i));
            values[i] = BinaryPrimitives.ReadDoubleLittleEndian(blob.AsSpan(16 * i + 8));
            if (!(orders[i] > 1) || double.IsInfinity(orders[i]) || !(values[i] >= 0))
            {
                throw new InvalidDataException($"a stored RDP vector holds order {orders[i]} with value {values[i]}; orders must be finite and > 1, values >= 0");
            }
        }
        return (orders, values);
    }
}

/// <summary>
/// A population's privacy ledger as the state holds it, loaded into the pure <see cref="PrivacyLedger"/> whose rules
/// decide reservations, charges and budget changes: its budget, every charge's RDP vector (composed per order, never
/// epsilons added), and every reservation not yet released less what its run has spent. A write loads it inside its
/// own transaction, so concurrent writers (serialized by the database) always act on each other's effects.
/// </summary>
/// <param name="Budget">The officer's budget row, with the balance below.</param>
/// <param name="Ledger">The ledger; null when the population holds charges recorded before per-order accounting.</param>
/// <param name="LegacyCharges">Charges without an RDP vector (state schema 1): they cannot be composed, so the
/// population is treated as spent in full (epsilon_spent infinite) and takes no more reservations or charges.</param>
internal sealed record PopulationLedger(BudgetRecord Budget, PrivacyLedger? Ledger, int LegacyCharges)
{
    /// <summary>Loads <paramref name="population"/>'s budget and ledger; null when no budget is set.</summary>
    /// <exception cref="InvalidDataException">The stored vectors are malformed, use different orders, or overspend the budget.</exception>
    public static PopulationLedger? Load(StateSession session, string population)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentException.ThrowIfNullOrEmpty(population);
        var row = session.Query("SELECT epsilon, delta, set_by, set_at FROM budgets WHERE population = @p",
            r => (Epsilon: r.Real(0), Delta: r.Real(1), SetBy: r.Text(2), SetAt: r.Time(3)), ("@p", population)).SingleOrDefault();
        if (row.SetBy is null)
        {
            return null;
        }
        BudgetRecord Record(PrivacyBalance b) => new(population, row.Epsilon, row.Delta, b.Spent, b.Reserved, b.Remaining, row.SetBy, row.SetAt);
        var charges = session.Query("SELECT run_id, round, rdp FROM ledger WHERE population = @p ORDER BY sequence",
            r => (RunId: r.Text(0), Round: r.Long(1), Rdp: r.IsDBNull(2) ? null : r.Blob(2)), ("@p", population));
        int legacy = charges.Count(c => c.Rdp is null);
        if (legacy > 0)
        {
            return new PopulationLedger(Record(new PrivacyBalance(row.Epsilon, row.Delta, double.PositiveInfinity, 0, 0)), null, legacy);
        }
        var reservations = session.Query(
            "SELECT run_id, planned_rdp FROM reservations WHERE population = @p AND released_at IS NULL ORDER BY run_id",
            r => (RunId: r.Text(0), Planned: r.Blob(1)), ("@p", population));

        double[]? orders = null;
        double[] Values(byte[] blob)
        {
            (double[] o, double[] v) = RdpBlob.Decode(blob);
            orders ??= o;
            if (!orders.AsSpan().SequenceEqual(o))
            {
                throw new InvalidDataException($"population '{population}' holds RDP vectors over different orders; they cannot be composed");
            }
            return v;
        }
        var charged = charges.Select(c => new PrivacyCharge(c.RunId, c.Round, Values(c.Rdp!))).ToArray();
        var spentByRun = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (PrivacyCharge charge in charged)
        {
            double[] sum = spentByRun.TryGetValue(charge.RunId, out double[]? s) ? s : spentByRun[charge.RunId] = new double[charge.Rdp.Length];
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] += charge.Rdp[i];
            }
        }
        var held = reservations.Select(r =>
        {
            double[] planned = Values(r.Planned);
            double[] remaining = spentByRun.TryGetValue(r.RunId, out double[]? spent)
                ? [.. planned.Select((p, i) => Math.Max(0, p - spent[i]))]
                : [.. planned];
            return new PrivacyReservation(r.RunId, planned, remaining);
        }).ToArray();
        PrivacyLedger ledger = PrivacyLedger.Import(
            new PrivacyLedgerState(population, row.Epsilon, row.Delta, orders ?? [.. RdpOrders.Default], charged, held));
        return new PopulationLedger(Record(ledger.Balance), ledger, 0);
    }

    /// <summary>The population's budget and ledger; refused when an officer never set a budget.</summary>
    /// <exception cref="BudgetRefusedException">No budget is set for <paramref name="population"/>.</exception>
    public static PopulationLedger Require(StateSession session, string population) =>
        Load(session, population)
            ?? throw new BudgetRefusedException($"no budget is set for population '{population}'; an officer sets one with 'budget set'");

    /// <summary>The ledger, or a refusal naming why a population with legacy charges takes no more.</summary>
    /// <exception cref="BudgetRefusedException">The population holds charges recorded before per-order accounting.</exception>
    public PrivacyLedger Composable => Ledger ?? throw new BudgetRefusedException(
        $"population '{Budget.Population}' holds {LegacyCharges} charge(s) recorded before per-order RDP accounting; they cannot be composed " +
        "honestly, so nothing more can be charged to it: set a budget on a new population for new runs");
}
