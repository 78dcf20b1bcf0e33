namespace Federated.Aggregation.Privacy;

/// <summary>
/// The one pricing of a round and a run, for either mechanism: validates the plan, calibrates the encoding every client
/// uses, and gives the per-round RDP vector over the orders, the run's epsilon and its best order, and the calibrated
/// quantities the epsilon comes from (scale, integer sensitivities under the stated adjacency, noise variance) so anyone
/// can recompute it from the papers. The coordinator, the edge ledger, the simulation and the officer's CLI all price
/// through this type.
/// </summary>
/// <remarks>
/// Distributed Skellam: Skellam RDP (Agarwal, Kairouz, Liu 2021, Thm 3.5) at integer orders with the threshold's t noise
/// shares; central: discrete Gaussian RDP (Canonne, Kamath, Steinke 2020, Thm 14). Replace-one doubles both
/// sensitivities (see <see cref="Adjacency"/>). Rounds compose additively per order; the run's epsilon is the Balle et
/// al. 2020 conversion at the plan's delta. Amplification by sampling is claimed only for a secret Poisson sample under
/// central add/remove (Zhu and Wang 2019, Thm 6); every other sampled plan is priced as if every round used q = 1,
/// because a public sample amplifies nothing: whoever sees the outputs also knows who was in them.
/// </remarks>
public sealed class PrivacyPlan
{
    private readonly double[] _orders;
    private readonly double[] _roundRdp;

    private PrivacyPlan(PrivacyPlanParameters parameters, double[] orders, DSkellamPlan quantizer, CentralGaussianPlan? central)
    {
        Parameters = parameters;
        _orders = orders;
        Quantizer = quantizer;
        Central = central;
        double factor = parameters.Adjacency == Adjacency.ReplaceOne ? 2 : 1;
        Amplified = parameters.SampleIsSecret && parameters.Adjacency == Adjacency.AddRemove && central is not null;
        if (central is null)
        {
            L2Sensitivity = factor * quantizer.L2Sensitivity;
            L1Sensitivity = factor * quantizer.L1Sensitivity;
            NoiseVariance = quantizer.ThresholdNoiseVariance;
            _roundRdp = quantizer.RdpPerRound(orders, parameters.Adjacency);
        }
        else
        {
            // ||x - x'||^2 <= (|x| + |x'|)^2 <= 4 B for replace-one; B for zero-out and add/remove.
            double l2Squared = factor * factor * quantizer.NormBoundSquared;
            L2Sensitivity = Math.Sqrt(l2Squared);
            L1Sensitivity = factor * quantizer.L1Sensitivity;
            NoiseVariance = central.SigmaSquared;
            _roundRdp = Amplified
                ? RdpAnalysis.PoissonSubsampled(a => a * l2Squared / (2.0 * central.SigmaSquared), parameters.SamplingRate, orders)
                : RdpAnalysis.DiscreteGaussian(l2Squared, central.SigmaSquared, orders);
        }
    }

    /// <summary>The validated parameters.</summary>
    public PrivacyPlanParameters Parameters { get; }

    /// <summary>The RDP orders of <see cref="RoundRdp"/>.</summary>
    public IReadOnlyList<double> Orders => _orders;

    /// <summary>"distributed_skellam" or "central_gaussian".</summary>
    public string MechanismName => PrivacyUnitNames.Name(Parameters.Mechanism);

    /// <summary>"client": one client's whole contribution across the rounds it takes part in.</summary>
    public string PrivacyUnit => PrivacyUnitNames.Client;

    /// <summary>"replace-one", "zero-out" or "add-remove".</summary>
    public string AdjacencyName => PrivacyUnitNames.Name(Parameters.Adjacency);

    /// <summary>What every client encodes with: rotation, <see cref="Scale"/>, conditional rounding, its noise share (none for central).</summary>
    public DSkellamPlan Quantizer { get; }

    /// <summary>The coordinator's noise for the central mechanism; null for distributed noise.</summary>
    public CentralGaussianPlan? Central { get; }

    /// <summary>Integer units per unit of update, after the rotation.</summary>
    public double Scale => Quantizer.Scale;

    /// <summary>L2 sensitivity of the integer sum under the plan's adjacency (integer units, after rotation, scaling and rounding).</summary>
    public double L2Sensitivity { get; }

    /// <summary>L1 sensitivity of the integer sum under the plan's adjacency (integer units).</summary>
    public double L1Sensitivity { get; }

    /// <summary>
    /// Distributed: the variance of the noise in the aggregate of <c>threshold</c> clients (2 mu t). Central: sigma^2
    /// of the discrete Gaussian (its actual variance is slightly below sigma^2).
    /// </summary>
    public double NoiseVariance { get; }

    /// <summary>Whether the price claims amplification by sampling (only a secret Poisson sample under central add/remove).</summary>
    public bool Amplified { get; }

    /// <summary>The sampling rate the price assumes: the plan's rate when amplified, otherwise 1.</summary>
    public double PricedSamplingRate => Amplified ? Parameters.SamplingRate : 1.0;

    /// <summary>RDP of one released round, per order.</summary>
    public IReadOnlyList<double> RoundRdp => _roundRdp;

    /// <summary>
    /// Distributed only: one round's RDP counting this client's own noise share alone (variance 2 mu), the bound an
    /// edge can hold against a coordinator whose other participants are all its sybils; null for central noise.
    /// </summary>
    public double[]? OwnShareRoundRdp() => Central is null
        ? RdpAnalysis.Skellam(L1Sensitivity, L2Sensitivity, 2 * Quantizer.LocalSkellamMu, _orders)
        : null;

    /// <summary>The composed RDP of <paramref name="rounds"/> released rounds.</summary>
    public double[] RdpAfter(long rounds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rounds);
        var rdp = new double[_roundRdp.Length];
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] = rounds == 0 ? 0 : _roundRdp[i] * rounds;
        }
        return rdp;
    }

    /// <summary>Epsilon (and best order) after <paramref name="rounds"/> released rounds, at the plan's delta.</summary>
    public PrivacySpent EpsilonAfter(long rounds) => RdpAnalysis.Epsilon(_orders, RdpAfter(rounds), Parameters.Delta);

    /// <summary>Epsilon (and best order) of the whole run: all planned rounds, at the plan's delta.</summary>
    public PrivacySpent Epsilon => EpsilonAfter(Parameters.Rounds);

    /// <summary>Validates and prices a plan; a plan that cannot be priced throws <see cref="PrivacyPlanException"/>.</summary>
    public static PrivacyPlan Create(PrivacyPlanParameters parameters, IReadOnlyList<double>? orders = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        parameters.Validate();
        double[] orderList = (orders ?? RdpOrders.Default).ToArray();
        if (orderList.Length == 0 || orderList.Any(a => !(a > 1) || double.IsInfinity(a)))
        {
            throw new ArgumentOutOfRangeException(nameof(orders), "orders must be a non-empty list of finite numbers > 1");
        }
        if (parameters.Mechanism == PrivacyMechanism.CentralGaussian)
        {
            CentralGaussianPlan central = CentralGaussianPlan.Calibrate(parameters.ToDSkellamParameters());
            return new PrivacyPlan(parameters, orderList, central.Quantizer, central);
        }
        DSkellamPlan quantizer;
        try
        {
            quantizer = DSkellamPlan.Calibrate(parameters.ToDSkellamParameters());
        }
        catch (ArgumentOutOfRangeException ex) when (ex is not PrivacyPlanException)
        {
            // Every other field was validated above, so the only refusal left is a ring too small for the plan.
            throw new PrivacyPlanException("bits", parameters.Bits, MinimumBitsAdvice(parameters));
        }
        return new PrivacyPlan(parameters, orderList, quantizer, null);
    }

    /// <summary>
    /// The smallest noise multiplier (to relative 1e-5) whose run epsilon meets <paramref name="targetEpsilon"/>; the
    /// parameters' own noise multiplier is ignored. Throws <see cref="PrivacyPlanException"/> on "target_epsilon" when
    /// no noise multiplier up to <see cref="PrivacyPlanParameters.MaxNoiseMultiplier"/> does, or when the ring cannot
    /// hold the noise the target needs.
    /// </summary>
    public static double NoiseForEpsilon(PrivacyPlanParameters parameters, double targetEpsilon, IReadOnlyList<double>? orders = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(targetEpsilon > 0) || double.IsInfinity(targetEpsilon))
        {
            throw new PrivacyPlanException("target_epsilon", targetEpsilon, "use a finite number > 0");
        }
        Create(parameters with { NoiseMultiplier = 1.0 }, orders); // refuses a bad plan on its own field first
        double EpsilonOf(double z)
        {
            try
            {
                return Create(parameters with { NoiseMultiplier = z }, orders).Epsilon.Epsilon;
            }
            catch (PrivacyPlanException ex) when (ex.Field == "bits")
            {
                throw new PrivacyPlanException("target_epsilon", targetEpsilon,
                    $"meeting it needs a noise multiplier of at least {z:G4}, and then {ex.Message}");
            }
        }
        return NoiseSearch.Smallest(EpsilonOf, targetEpsilon, start: 1.0, stepDown: 0.5, floor: 1e-3, PrivacyPlanParameters.MaxNoiseMultiplier,
            reason => new PrivacyPlanException("target_epsilon", targetEpsilon, reason));
    }

    private static string MinimumBitsAdvice(PrivacyPlanParameters p)
    {
        for (int bits = p.Bits + 1; bits <= 32; bits++)
        {
            try
            {
                DSkellamPlan.Calibrate((p with { Bits = bits }).ToDSkellamParameters());
                return $"a {p.Bits}-bit ring cannot hold the rounding and noise of {p.Clients} clients at dimension {p.Dimension}; use bits >= {bits} (at most 32)";
            }
            catch (ArgumentOutOfRangeException)
            {
            }
        }
        return $"no ring up to 32 bits can hold the rounding and noise of {p.Clients} clients at dimension {p.Dimension}; use fewer clients, a smaller dimension or less noise";
    }
}
