namespace Federated.Aggregation.Privacy;

/// <summary>An (epsilon, delta) budget set by the privacy officer for one population.</summary>
public sealed record PrivacyBudget(double Epsilon, double Delta)
{
    /// <summary>Throws unless 0 &lt; epsilon &lt; infinity and 0 &lt; delta &lt; 1.</summary>
    public void Validate()
    {
        if (!(Epsilon > 0) || double.IsInfinity(Epsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "budget epsilon must be a finite number > 0");
        }
        if (!(Delta > 0 && Delta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Delta), Delta, "budget delta must be in (0, 1)");
        }
    }
}

/// <summary>One round's charge as stored: RDP per order of the ledger's order list.</summary>
public sealed record PrivacyCharge(string RunId, long Round, double[] Rdp);

/// <summary>A ledger's full state as plain values, for persistence by the coordinator or the edge client.</summary>
public sealed record PrivacyLedgerState(string Population, double BudgetEpsilon, double BudgetDelta, double[] Orders, PrivacyCharge[] Charges);

/// <summary>What happened to a charge.</summary>
public enum ChargeOutcome
{
    /// <summary>The charge was recorded.</summary>
    Charged,

    /// <summary>This (run, round) was charged before; nothing changed.</summary>
    AlreadyCharged,

    /// <summary>The charge would exceed the budget; nothing changed.</summary>
    Refused,
}

/// <summary>Result of a charge: the outcome and the epsilon spent after it.</summary>
public sealed record ChargeResult(ChargeOutcome Outcome, PrivacySpent Spent);

/// <summary>
/// Per-population privacy ledger: composes RDP charges per order across rounds and runs, refuses any charge
/// that would exceed the budget, and charges each (run, round) at most once. Pure logic; thread-safe.
/// </summary>
public sealed class PrivacyLedger
{
    private readonly object _gate = new();
    private readonly double[] _orders;
    private readonly double[] _total;
    private readonly Dictionary<(string RunId, long Round), double[]> _charges = new();
    private readonly List<PrivacyCharge> _history = new();

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
        _total = new double[_orders.Length];
    }

    /// <summary>The population this ledger guards.</summary>
    public string Population { get; }

    /// <summary>The officer's budget.</summary>
    public PrivacyBudget Budget { get; }

    /// <summary>The RDP orders every charge vector uses.</summary>
    public IReadOnlyList<double> Orders => _orders;

    /// <summary>Epsilon spent so far at the budget's delta.</summary>
    public PrivacySpent Spent
    {
        get
        {
            lock (_gate)
            {
                return RdpAnalysis.Epsilon(_orders, _total, Budget.Delta);
            }
        }
    }

    /// <summary>Epsilon still available: budget minus spent, never negative.</summary>
    public double RemainingEpsilon => Math.Max(0.0, Budget.Epsilon - Spent.Epsilon);

    /// <summary>The RDP vector of <paramref name="rounds"/> rounds of the subsampled Gaussian on this ledger's orders.</summary>
    public double[] SubsampledGaussianCharge(double samplingRate, double noiseMultiplier, long rounds = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        double[] rdp = RdpAnalysis.SubsampledGaussian(samplingRate, noiseMultiplier, _orders);
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] *= rounds;
        }
        return rdp;
    }

    /// <summary>Epsilon that would be spent after adding the planned RDP to what is spent.</summary>
    public PrivacySpent Preview(ReadOnlySpan<double> plannedRdp)
    {
        CheckVector(plannedRdp);
        lock (_gate)
        {
            return RdpAnalysis.Epsilon(_orders, Sum(_total, plannedRdp), Budget.Delta);
        }
    }

    /// <summary>Whether the planned RDP (e.g. all rounds of a run) still fits in the budget.</summary>
    public bool CanAfford(ReadOnlySpan<double> plannedRdp) => Preview(plannedRdp).Epsilon <= Budget.Epsilon;

    /// <summary>How many more rounds of the subsampled Gaussian the budget allows.</summary>
    public long AffordableRounds(double samplingRate, double noiseMultiplier, long maxRounds = 10_000_000)
    {
        double[] perRound = SubsampledGaussianCharge(samplingRate, noiseMultiplier);
        if (!CanAfford(perRound))
        {
            return 0;
        }
        long lo = 1, hi = 2;
        while (hi <= maxRounds && CanAfford(Scale(perRound, hi)))
        {
            lo = hi;
            hi *= 2;
        }
        hi = Math.Min(hi, maxRounds + 1);
        while (hi - lo > 1)
        {
            long mid = lo + (hi - lo) / 2;
            if (CanAfford(Scale(perRound, mid)))
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
    /// Charges one round of a run. A repeated (run, round) is a no-op that reports AlreadyCharged; a charge that
    /// would exceed the budget is refused and changes nothing.
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
                return new ChargeResult(ChargeOutcome.AlreadyCharged, RdpAnalysis.Epsilon(_orders, _total, Budget.Delta));
            }
            double[] after = Sum(_total, rdp);
            PrivacySpent spentAfter = RdpAnalysis.Epsilon(_orders, after, Budget.Delta);
            if (!(spentAfter.Epsilon <= Budget.Epsilon))
            {
                return new ChargeResult(ChargeOutcome.Refused, RdpAnalysis.Epsilon(_orders, _total, Budget.Delta));
            }
            double[] copy = rdp.ToArray();
            _charges.Add((runId, round), copy);
            _history.Add(new PrivacyCharge(runId, round, copy));
            after.CopyTo(_total, 0);
            return new ChargeResult(ChargeOutcome.Charged, spentAfter);
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

    /// <summary>The state as plain records (charges in the order they were made).</summary>
    public PrivacyLedgerState Export()
    {
        lock (_gate)
        {
            return new PrivacyLedgerState(Population, Budget.Epsilon, Budget.Delta, _orders.ToArray(),
                _history.Select(c => c with { Rdp = c.Rdp.ToArray() }).ToArray());
        }
    }

    /// <summary>Rebuilds a ledger from exported state, validating every charge and the budget.</summary>
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
            ChargeResult result = ledger.Charge(charge.RunId, charge.Round, charge.Rdp);
            if (result.Outcome != ChargeOutcome.Charged)
            {
                throw new InvalidDataException($"ledger state for '{state.Population}' is inconsistent: run '{charge.RunId}' round {charge.Round} was {result.Outcome}");
            }
        }
        return ledger;
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

    private static double[] Sum(double[] a, ReadOnlySpan<double> b)
    {
        var result = new double[a.Length];
        for (int i = 0; i < a.Length; i++)
        {
            result[i] = a[i] + b[i];
        }
        return result;
    }

    private static double[] Scale(double[] a, long factor) => a.Select(v => v * factor).ToArray();
}
