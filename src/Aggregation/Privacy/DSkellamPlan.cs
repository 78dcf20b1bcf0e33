namespace Federated.Aggregation.Privacy;

/// <summary>What the officer and engineer choose for the distributed Skellam mechanism of one round.</summary>
/// <param name="Dimension">Length d of the flattened update.</param>
/// <param name="Bits">Ring bit width b: SecAgg sums in Z_(2^b), 16 &lt;= b &lt;= 32.</param>
/// <param name="ClipNorm">L2 clip norm C of each client's update.</param>
/// <param name="NoiseMultiplier">z: summed noise standard deviation over the integer L2 sensitivity; 0 quantizes without
/// noise (central DP, where the coordinator adds discrete Gaussian noise to the modular sum instead).</param>
/// <param name="MaxClients">Most clients whose vectors may be summed in one round (sizes the wrap bound).</param>
/// <param name="MinClients">SecAgg threshold t: the noise of any t clients carries the full planned noise.</param>
/// <param name="Beta">Conditional rounding failure bound (TFF's default exp(-1/2)).</param>
/// <param name="WrapStdDevs">k: each aggregate coordinate must stay within k sub-Gaussian standard deviations of the ring.</param>
public sealed record DSkellamParameters(
    int Dimension,
    int Bits,
    double ClipNorm,
    double NoiseMultiplier,
    int MaxClients,
    int MinClients,
    double Beta = 0.60653065971263342,
    double WrapStdDevs = 4.0);

/// <summary>
/// Calibrated distributed Skellam mechanism (Agarwal, Kairouz, Liu 2021; TFF DistributedDpSumFactory): the scale,
/// the integer sensitivities after conditional rounding, the per-client Skellam noise and the wrap bound.
/// </summary>
public sealed class DSkellamPlan
{
    private DSkellamPlan(DSkellamParameters parameters, int paddedDimension, double scale)
    {
        Parameters = parameters;
        PaddedDimension = paddedDimension;
        Scale = scale;
        // The squared norm of an integer vector is an integer, so the conditional-rounding bound holds at its floor.
        NormBoundSquared = Math.Floor(RoundedNormBoundSquared(scale * parameters.ClipNorm, paddedDimension, parameters.Beta));
        L2Sensitivity = Math.Sqrt(NormBoundSquared);
        // An integer vector has |x|_1 <= |x|_2^2 and, by Cauchy-Schwarz, |x|_1 <= sqrt(d) |x|_2.
        L1Sensitivity = Math.Min(NormBoundSquared, Math.Sqrt(paddedDimension) * L2Sensitivity);
        NoiseVariance = Math.Pow(parameters.NoiseMultiplier * L2Sensitivity, 2);
        LocalSkellamMu = NoiseVariance / (2.0 * parameters.MinClients);
        AggregateStdDev = Math.Sqrt(AggregateVariance(parameters, paddedDimension, scale));
    }

    /// <summary>The parameters this plan was calibrated for.</summary>
    public DSkellamParameters Parameters { get; }

    /// <summary>Dimension padded to a power of two (the length of every encoded vector).</summary>
    public int PaddedDimension { get; }

    /// <summary>Scale s applied after rotation (integer units per unit of update).</summary>
    public double Scale { get; }

    /// <summary>Bound on the squared L2 norm of a client's rounded integer vector: an integer (held exactly by the double).</summary>
    public double NormBoundSquared { get; }

    /// <summary>L2 norm bound of one client's rounded integer vector, sqrt(NormBoundSquared): the zero-out L2 sensitivity.</summary>
    public double L2Sensitivity { get; }

    /// <summary>L1 norm bound of one client's rounded integer vector: the zero-out L1 sensitivity.</summary>
    public double L1Sensitivity { get; }

    /// <summary>Variance of the summed Skellam noise per coordinate over MinClients clients, integer units: (z * L2)^2.</summary>
    public double NoiseVariance { get; }

    /// <summary>Each client adds Poisson(mu) - Poisson(mu) per coordinate with this mu (variance 2 mu = NoiseVariance / t).</summary>
    public double LocalSkellamMu { get; }

    /// <summary>Sub-Gaussian standard deviation bound of one aggregate coordinate at MaxClients (integer units).</summary>
    public double AggregateStdDev { get; }

    /// <summary>Bound on the probability that one coordinate wraps: 2 exp(-k^2 / 2).</summary>
    public double PerCoordinateWrapBound => 2 * Math.Exp(-Parameters.WrapStdDevs * Parameters.WrapStdDevs / 2);

    /// <summary>Standard deviation of the noise in the decoded sum of <paramref name="clients"/> clients (update units).</summary>
    public double NoiseStdDevOfSum(int clients)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(clients, 1);
        return Math.Sqrt(2 * LocalSkellamMu * clients) / Scale;
    }

    /// <summary>Variance of the noise in a sum of exactly MinClients encodings: 2 mu t, what the threshold's honest shares carry.</summary>
    public double ThresholdNoiseVariance => 2 * LocalSkellamMu * Parameters.MinClients;

    /// <summary>
    /// RDP per round at the given orders: the Skellam RDP (Agarwal et al. 2021, Thm 3.5, at integer orders) of the
    /// integer sensitivities under <paramref name="adjacency"/> and the noise of the threshold's t shares. Under both
    /// relations it accepts the client's own share stays in the sum (see <see cref="Adjacency"/>); replace-one doubles
    /// both sensitivities. Add/remove is refused: its two worlds differ in noise variance, which this bound does not cover.
    /// </summary>
    internal double[] RdpPerRound(IReadOnlyList<double> orders, Adjacency adjacency)
    {
        if (!(ThresholdNoiseVariance > 0))
        {
            throw new InvalidOperationException("a plan without noise (noise multiplier 0) gives no differential privacy by itself");
        }
        double factor = adjacency switch
        {
            Adjacency.ZeroOut => 1,
            Adjacency.ReplaceOne => 2,
            _ => throw new ArgumentOutOfRangeException(nameof(adjacency), adjacency, "distributed noise is priced for replace-one or zero-out only"),
        };
        return RdpAnalysis.Skellam(factor * L1Sensitivity, factor * L2Sensitivity, ThresholdNoiseVariance, orders);
    }

    /// <summary>L2 sensitivity of one client's contribution to the decoded sum (update units): the rounded norm bound over the scale, slightly above C.</summary>
    public double DecodedL2Sensitivity => L2Sensitivity / Scale;

    /// <summary>
    /// Picks the largest scale s (capped so each client's Poisson mean is at most MaxSkellamMu) such that
    /// k * sqrt(V(s)) &lt;= 2^(b-1), where V(s) bounds the sub-Gaussian
    /// variance proxy of one coordinate of the aggregate of n = MaxClients clients (Kairouz, Liu, Steinke 2021,
    /// Section 4, as in TFF's heuristic scale factor for distributed DP):
    ///   V(s) = (s n C)^2 / d'  (the shared rotation makes sum_j H D x_j / sqrt(d') sub-Gaussian with proxy |sum x_j|^2 / d')
    ///        + n / 4           (each client's rounding error lies in [-1, 1] with mean zero)
    ///        + (n / t) (z Delta2(s))^2  (the Skellam noise of n clients, each of variance (z Delta2)^2 / t).
    /// A coordinate then wraps (leaves [-2^(b-1), 2^(b-1))) with probability at most 2 exp(-k^2 / 2).
    /// </summary>
    public static DSkellamPlan Calibrate(DSkellamParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Validate(parameters);
        int padded = Fft.NextPowerOfTwo(parameters.Dimension);
        double limit = Math.Pow(2, parameters.Bits - 1);
        Func<double, bool> fits = s => parameters.WrapStdDevs * Math.Sqrt(AggregateVariance(parameters, padded, s)) <= limit;
        if (!fits(0))
        {
            throw new ArgumentOutOfRangeException(nameof(parameters), parameters.Bits,
                $"a {parameters.Bits}-bit ring cannot hold the rounding and noise of {parameters.MaxClients} clients at dimension {parameters.Dimension}; use more bits (<= 32) or less noise");
        }
        double lo = 0, hi = 1;
        while (fits(hi))
        {
            lo = hi;
            hi *= 2;
        }
        while (hi - lo > 1e-12 * hi)
        {
            double mid = 0.5 * (lo + hi);
            if (fits(mid))
            {
                lo = mid;
            }
            else
            {
                hi = mid;
            }
        }
        // Past the point where each client's Poisson mean reaches MaxSkellamMu, more scale buys nothing (the
        // rounding variance n/4 is already ~1e-13 of the noise) and the samplers would leave exact double range.
        double muCap = lo;
        if (LocalMu(parameters, padded, muCap) > MaxSkellamMu)
        {
            double a = 0, b = muCap;
            while (b - a > 1e-12 * b)
            {
                double mid = 0.5 * (a + b);
                if (LocalMu(parameters, padded, mid) <= MaxSkellamMu)
                {
                    a = mid;
                }
                else
                {
                    b = mid;
                }
            }
            lo = a;
        }
        if (!(lo > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(parameters), parameters.Bits, "no positive scale fits the ring; use more bits");
        }
        return new DSkellamPlan(parameters, padded, lo);
    }

    /// <summary>A plan with a scale chosen elsewhere (the central mechanism's hard ring bound), validated like any other.</summary>
    internal static DSkellamPlan WithScale(DSkellamParameters parameters, double scale)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        Validate(parameters);
        if (!(scale > 0) || double.IsInfinity(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, "scale must be a finite number > 0");
        }
        return new DSkellamPlan(parameters, Fft.NextPowerOfTwo(parameters.Dimension), scale);
    }

    /// <summary>Largest per-client Poisson mean the plan allows (doubles hold such integers exactly).</summary>
    public const double MaxSkellamMu = 1e14;

    private static double LocalMu(DSkellamParameters p, int padded, double scale) =>
        p.NoiseMultiplier * p.NoiseMultiplier * RoundedNormBoundSquared(scale * p.ClipNorm, padded, p.Beta) / (2.0 * p.MinClients);

    internal static double AggregateVariance(DSkellamParameters p, int padded, double scale)
    {
        double n = p.MaxClients, t = p.MinClients;
        double signal = Math.Pow(scale * n * p.ClipNorm, 2) / padded;
        double rounding = n / 4;
        double noise = n / t * p.NoiseMultiplier * p.NoiseMultiplier * RoundedNormBoundSquared(scale * p.ClipNorm, padded, p.Beta);
        return signal + rounding + noise;
    }

    // Conditional randomized rounding keeps |x~|^2 <= min(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2), (c + sqrt(d))^2)
    // for a vector of norm c (Kairouz, Liu, Steinke 2021, conditional randomized rounding, Section 4; the bound TFF uses); rounds that exceed it are redrawn.
    internal static double RoundedNormBoundSquared(double scaledNorm, int dimension, double beta)
    {
        double c = scaledNorm, d = dimension;
        double bound = c * c + d / 4 + Math.Sqrt(2 * Math.Log(1 / beta)) * (c + Math.Sqrt(d) / 2);
        return Math.Min(bound, Math.Pow(c + Math.Sqrt(d), 2));
    }

    private static void Validate(DSkellamParameters p)
    {
        if (p.Dimension < 1 || p.Dimension > 1 << 28)
        {
            throw new ArgumentOutOfRangeException(nameof(p.Dimension), p.Dimension, "dimension must be in [1, 2^28]");
        }
        if (p.Bits < 16 || p.Bits > 32)
        {
            throw new ArgumentOutOfRangeException(nameof(p.Bits), p.Bits, "bits must be in [16, 32]");
        }
        if (!(p.ClipNorm > 0) || double.IsInfinity(p.ClipNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(p.ClipNorm), p.ClipNorm, "clip norm must be a finite number > 0");
        }
        if (!(p.NoiseMultiplier >= 0) || double.IsInfinity(p.NoiseMultiplier))
        {
            throw new ArgumentOutOfRangeException(nameof(p.NoiseMultiplier), p.NoiseMultiplier, "noise multiplier must be a finite number >= 0 (0: quantization only)");
        }
        if (p.MinClients < 1 || p.MaxClients < p.MinClients || p.MaxClients > 1_000_000)
        {
            throw new ArgumentOutOfRangeException(nameof(p.MaxClients), p.MaxClients, $"need 1 <= min clients ({p.MinClients}) <= max clients <= 1,000,000");
        }
        if (!(p.Beta > 0 && p.Beta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(p.Beta), p.Beta, "beta must be in (0, 1)");
        }
        if (!(p.WrapStdDevs > 0) || double.IsInfinity(p.WrapStdDevs))
        {
            throw new ArgumentOutOfRangeException(nameof(p.WrapStdDevs), p.WrapStdDevs, "wrap standard deviations must be a finite number > 0");
        }
    }
}
