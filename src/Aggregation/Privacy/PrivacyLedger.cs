namespace Federated.Aggregation.Privacy;

/// <summary>
/// A population's privacy ledger: composes every run's RDP per order (never epsilons added as numbers), converts at the
/// budget's delta, and keeps the budget whole under concurrency by reserving a run's planned RDP when it starts,
/// turning reservation into spend round by round, and releasing what a run did not spend when it ends, aborts or
/// fails. Pure logic, thread-safe; the coordinator persists its <see cref="Export"/>.
/// </summary>
/// <remarks>
/// "Committed" is spent plus reserved, composed per order. Epsilons are reported at the budget's delta: spent =
/// eps(spent), reserved = eps(committed) - eps(spent) (what the reservations add), remaining = budget - eps(committed),
/// so the three add up to the budget. RDP composes additively per order (Mironov 2017, Prop. 1).
/// </remarks>
public sealed class PrivacyLedger
{
    private readonly Lock _gate = new();
    private readonly double[] _orders;
    private readonly double[] _spent;
    private readonly Dictionary<(string RunId, long Round), double[]> _charges = new();
    private readonly List<PrivacyCharge> _history = new();
    private readonly Dictionary<string, (double[] Planned, double[] Remaining)> _reservations = new(StringComparer.Ordinal);

    /// <summary>Creates an empty ledger for a population with a budget, over the given RDP orders.</summary>
    public PrivacyLedger(string population, PrivacyBudget budget, IReadOnlyList<double>? orders = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(population);
        ArgumentNullException.ThrowIfNull(budget);
        budget.Validate();
        Population = population;
        Budget = budget;
        _orders = (orders ?? RdpOrders.Default).ToArray();
        if (_orders.Length == 0 || _orders.Any(a => !(a > 1) || double.IsInfinity(a)))
        {
            throw new ArgumentOutOfRangeException(nameof(orders), "orders must be a non-empty list of finite numbers > 1");
        }
        _spent = new double[_orders.Length];
    }

    /// <summary>The population this ledger guards.</summary>
    public string Population { get; }

    /// <summary>The officer's budget.</summary>
    public PrivacyBudget Budget { get; private set; }

    /// <summary>The RDP orders every charge and reservation vector uses.</summary>
    public IReadOnlyList<double> Orders => _orders;

    /// <summary>Epsilon spent by released rounds, at the budget's delta.</summary>
    public PrivacySpent Spent
    {
        get
        {
            lock (_gate)
            {
                return RdpAnalysis.Epsilon(_orders, _spent, Budget.Delta);
            }
        }
    }

    /// <summary>Spent, reserved and remaining epsilon at the budget's delta.</summary>
    public PrivacyBalance Balance
    {
        get
        {
            lock (_gate)
            {
                return BalanceOf(Budget, Committed(null, null));
            }
        }
    }

    /// <summary>Epsilon still available: budget minus spent and reserved, never negative.</summary>
    public double RemainingEpsilon => Balance.Remaining;

    /// <summary>Epsilon committed (spent and reserved) after adding <paramref name="plannedRdp"/>.</summary>
    public PrivacySpent Preview(ReadOnlySpan<double> plannedRdp)
    {
        CheckVector(plannedRdp);
        lock (_gate)
        {
            return RdpAnalysis.Epsilon(_orders, Add(Committed(null, null), plannedRdp), Budget.Delta);
        }
    }

    /// <summary>Whether <paramref name="plannedRdp"/> still fits next to what is spent and reserved.</summary>
    public bool CanAfford(ReadOnlySpan<double> plannedRdp) => Preview(plannedRdp).Epsilon <= Budget.Epsilon;

    /// <summary>How many more rounds of <paramref name="perRoundRdp"/> fit next to what is spent and reserved (0 if none).</summary>
    public long AffordableRounds(ReadOnlySpan<double> perRoundRdp, long maxRounds = 10_000_000)
    {
        CheckVector(perRoundRdp);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRounds, 1);
        double[] perRound = perRoundRdp.ToArray();
        bool Fits(long rounds) => CanAfford(perRound.Select(v => v * rounds).ToArray());
        if (!Fits(1))
        {
            return 0;
        }
        long lo = 1, hi = 2;
        while (hi <= maxRounds && Fits(hi))
        {
            lo = hi;
            hi *= 2;
        }
        hi = Math.Min(hi, maxRounds + 1);
        while (hi - lo > 1)
        {
            long mid = lo + (hi - lo) / 2;
            if (Fits(mid))
            {
                lo = mid;
            }
            else
            {
                hi = mid;
            }
        }
        return lo;
    }

    /// <summary>
    /// Reserves a run's planned RDP (all its rounds) if it fits next to what is spent and reserved; a refused
    /// reservation changes nothing. Reserving the same run again with the same plan reports AlreadyReserved.
    /// </summary>
    public ReservationResult Reserve(string runId, ReadOnlySpan<double> plannedRdp)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runId);
        CheckVector(plannedRdp);
        lock (_gate)
        {
            if (_reservations.TryGetValue(runId, out var existing))
            {
                if (!existing.Planned.AsSpan().SequenceEqual(plannedRdp))
                {
                    throw new InvalidOperationException($"run '{runId}' already holds a reservation for a different plan");
                }
                return new ReservationResult(ReservationOutcome.AlreadyReserved, BalanceOf(Budget, Committed(null, null)));
            }
            double[] after = Add(Committed(null, null), plannedRdp);
            if (!(RdpAnalysis.Epsilon(_orders, after, Budget.Delta).Epsilon <= Budget.Epsilon))
            {
                return new ReservationResult(ReservationOutcome.Refused, BalanceOf(Budget, Committed(null, null)));
            }
            _reservations.Add(runId, (plannedRdp.ToArray(), plannedRdp.ToArray()));
            return new ReservationResult(ReservationOutcome.Reserved, BalanceOf(Budget, after));
        }
    }

    /// <summary>
    /// Charges one released round. The run's reservation shrinks by the charge (per order, never below zero); the
    /// charge is refused, changing nothing, when spent plus every reservation would then exceed the budget, which can
    /// only happen when it exceeds what the run reserved. A repeated (run, round) reports AlreadyCharged.
    /// </summary>
    public ChargeResult Charge(string runId, long round, ReadOnlySpan<double> rdp)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runId);
        ArgumentOutOfRangeException.ThrowIfNegative(round);
        CheckVector(rdp);
        lock (_gate)
        {
            if (_charges.TryGetValue((runId, round), out double[]? existing))
            {
                if (!existing.AsSpan().SequenceEqual(rdp))
                {
                    throw new InvalidOperationException($"run '{runId}' round {round} was already charged with a different amount");
                }
                return new ChargeResult(ChargeOutcome.AlreadyCharged, RdpAnalysis.Epsilon(_orders, _spent, Budget.Delta));
            }
            double[]? remaining = null;
            if (_reservations.TryGetValue(runId, out var reservation))
            {
                remaining = new double[_orders.Length];
                for (int i = 0; i < remaining.Length; i++)
                {
                    remaining[i] = Math.Max(0, reservation.Remaining[i] - rdp[i]);
                }
            }
            double[] spentAfter = Add(_spent, rdp);
            // A charge the run's reservation covers at every order only turns reservation into spend: what is committed
            // does not grow, so it needs no budget check (which, re-summed in another order, could refuse it by a rounding).
            bool covered = reservation.Remaining is { } held && Covers(held, rdp);
            double[] committedAfter = Committed(runId, remaining);
            for (int i = 0; i < committedAfter.Length; i++)
            {
                committedAfter[i] += rdp[i];
            }
            if (!covered && !(RdpAnalysis.Epsilon(_orders, committedAfter, Budget.Delta).Epsilon <= Budget.Epsilon))
            {
                return new ChargeResult(ChargeOutcome.Refused, RdpAnalysis.Epsilon(_orders, _spent, Budget.Delta));
            }
            double[] copy = rdp.ToArray();
            _charges.Add((runId, round), copy);
            _history.Add(new PrivacyCharge(runId, round, copy));
            spentAfter.CopyTo(_spent, 0);
            if (remaining is not null)
            {
                _reservations[runId] = (reservation.Planned, remaining);
            }
            return new ChargeResult(ChargeOutcome.Charged, RdpAnalysis.Epsilon(_orders, _spent, Budget.Delta));
        }
    }

    /// <summary>Releases what a run reserved and did not spend (it completed, aborted or failed); false if it held nothing.</summary>
    public bool Release(string runId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(runId);
        lock (_gate)
        {
            return _reservations.Remove(runId);
        }
    }

    /// <summary>
    /// Replaces the budget unless what is already spent and reserved, converted at the new delta, exceeds the new
    /// epsilon; a refusal changes nothing and its text names both numbers.
    /// </summary>
    public BudgetChangeResult ChangeBudget(PrivacyBudget budget)
    {
        ArgumentNullException.ThrowIfNull(budget);
        budget.Validate();
        lock (_gate)
        {
            PrivacyBalance under = BalanceOf(budget, Committed(null, null));
            if (under.Spent + under.Reserved > budget.Epsilon)
            {
                return new BudgetChangeResult(false, under,
                    $"budget epsilon {budget.Epsilon:G6} is below what population '{Population}' has already spent ({under.Spent:G6}) and reserved ({under.Reserved:G6}) at delta {budget.Delta:G6}");
            }
            Budget = budget;
            return new BudgetChangeResult(true, under, null);
        }
    }

    /// <summary>Whether this (run, round) has been charged.</summary>
    public bool IsCharged(string runId, long round)
    {
        lock (_gate)
        {
            return _charges.ContainsKey((runId, round));
        }
    }

    /// <summary>Whether the run holds a reservation.</summary>
    public bool IsReserved(string runId)
    {
        lock (_gate)
        {
            return _reservations.ContainsKey(runId);
        }
    }

    /// <summary>The state as plain records (charges in the order they were made, reservations by run id).</summary>
    public PrivacyLedgerState Export()
    {
        lock (_gate)
        {
            return new PrivacyLedgerState(Population, Budget.Epsilon, Budget.Delta, _orders.ToArray(),
                _history.Select(c => c with { Rdp = c.Rdp.ToArray() }).ToArray(),
                _reservations.OrderBy(r => r.Key, StringComparer.Ordinal)
                    .Select(r => new PrivacyReservation(r.Key, r.Value.Planned.ToArray(), r.Value.Remaining.ToArray())).ToArray());
        }
    }

    /// <summary>
    /// Rebuilds a ledger from exported state; throws <see cref="InvalidDataException"/> when a record is malformed or
    /// repeated, or when what it holds does not fit its budget. The fit is checked once, on the whole state, with a
    /// relative slack of <see cref="ImportTolerance"/>: the vectors were checked when they were written, and summing
    /// them again in another order may differ from that by a rounding.
    /// </summary>
    public static PrivacyLedger Import(PrivacyLedgerState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(state.Orders);
        ArgumentNullException.ThrowIfNull(state.Charges);
        var ledger = new PrivacyLedger(state.Population, new PrivacyBudget(state.BudgetEpsilon, state.BudgetDelta), state.Orders);
        foreach (PrivacyCharge charge in state.Charges)
        {
            ArgumentNullException.ThrowIfNull(charge);
            ArgumentNullException.ThrowIfNull(charge.Rdp);
            ArgumentException.ThrowIfNullOrWhiteSpace(charge.RunId);
            ledger.CheckVector(charge.Rdp);
            double[] copy = charge.Rdp.ToArray();
            if (charge.Round < 0 || !ledger._charges.TryAdd((charge.RunId, charge.Round), copy))
            {
                throw new InvalidDataException($"ledger state for '{state.Population}' is inconsistent: run '{charge.RunId}' round {charge.Round} is charged twice or numbered below 0");
            }
            ledger._history.Add(new PrivacyCharge(charge.RunId, charge.Round, copy));
            for (int i = 0; i < copy.Length; i++)
            {
                ledger._spent[i] += copy[i];
            }
        }
        foreach (PrivacyReservation reservation in state.Reservations ?? [])
        {
            ArgumentNullException.ThrowIfNull(reservation);
            ArgumentNullException.ThrowIfNull(reservation.Planned);
            ArgumentNullException.ThrowIfNull(reservation.Remaining);
            ArgumentException.ThrowIfNullOrWhiteSpace(reservation.RunId);
            ledger.CheckVector(reservation.Planned);
            ledger.CheckVector(reservation.Remaining);
            if (!ledger._reservations.TryAdd(reservation.RunId, (reservation.Planned.ToArray(), reservation.Remaining.ToArray())))
            {
                throw new InvalidDataException($"ledger state for '{state.Population}' is inconsistent: run '{reservation.RunId}' holds two reservations");
            }
        }
        double committed = RdpAnalysis.Epsilon(ledger._orders, ledger.Committed(null, null), state.BudgetDelta).Epsilon;
        if (!(committed <= state.BudgetEpsilon * (1 + ImportTolerance)))
        {
            throw new InvalidDataException(
                $"ledger state for '{state.Population}' is inconsistent: it commits epsilon {committed:G6} (spent and reserved) over its budget {state.BudgetEpsilon:G6} at delta {state.BudgetDelta:G6}");
        }
        return ledger;
    }

    /// <summary>Relative slack <see cref="Import"/> allows over the budget for rounding in re-summed vectors.</summary>
    public const double ImportTolerance = 1e-9;

    private static bool Covers(double[] held, ReadOnlySpan<double> rdp)
    {
        for (int i = 0; i < held.Length; i++)
        {
            if (!(rdp[i] <= held[i]))
            {
                return false;
            }
        }
        return true;
    }

    // Spent plus every reservation, with run `replacedRun`'s reservation taken as `replacement` (null: as held).
    private double[] Committed(string? replacedRun, double[]? replacement)
    {
        double[] total = _spent.ToArray();
        foreach ((string runId, (double[] _, double[] remaining)) in _reservations)
        {
            double[] part = runId == replacedRun && replacement is not null ? replacement : remaining;
            for (int i = 0; i < total.Length; i++)
            {
                total[i] += part[i];
            }
        }
        return total;
    }

    private PrivacyBalance BalanceOf(PrivacyBudget budget, double[] committed)
    {
        double spent = RdpAnalysis.Epsilon(_orders, _spent, budget.Delta).Epsilon;
        double all = RdpAnalysis.Epsilon(_orders, committed, budget.Delta).Epsilon;
        return new PrivacyBalance(budget.Epsilon, budget.Delta, spent, Math.Max(0, all - spent), Math.Max(0, budget.Epsilon - all));
    }

    private void CheckVector(ReadOnlySpan<double> rdp)
    {
        if (rdp.Length != _orders.Length)
        {
            throw new ArgumentException($"RDP vector has {rdp.Length} entries; the ledger uses {_orders.Length} orders", nameof(rdp));
        }
        foreach (double v in rdp)
        {
            if (!(v >= 0))
            {
                throw new ArgumentOutOfRangeException(nameof(rdp), v, "RDP values must be >= 0 (infinity allowed)");
            }
        }
    }

    private static double[] Add(double[] a, ReadOnlySpan<double> b)
    {
        var result = new double[a.Length];
        for (int i = 0; i < a.Length; i++)
        {
            result[i] = a[i] + b[i];
        }
        return result;
    }
}
