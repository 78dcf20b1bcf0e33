namespace Federated.Aggregation.Privacy;

/// <summary>
/// A discretized privacy loss distribution: mass Probs[i] on loss (LowerLoss + i) * Discretization plus mass on
/// +infinity (dp_accounting pld_pmf.py DensePLDPmf).
/// </summary>
internal sealed class PrivacyLossPmf
{
    public PrivacyLossPmf(double discretization, long lowerLoss, double[] probs, double infinityMass)
    {
        ArgumentNullException.ThrowIfNull(probs);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(discretization);
        Discretization = discretization;
        LowerLoss = lowerLoss;
        Probs = probs;
        InfinityMass = infinityMass;
    }

    public double Discretization { get; }

    public long LowerLoss { get; }

    public double[] Probs { get; }

    public double InfinityMass { get; }

    /// <summary>
    /// Pessimistic connect-the-dots PMF on the grid lower..upper (dp_accounting
    /// create_pmf_pessimistic_connect_dots_fixed_gap; Doroshenko et al. 2022, Algorithm 1).
    /// </summary>
    public static PrivacyLossPmf ConnectTheDots(double discretization, long roundedLower, long roundedUpper, Func<double, double> deltaForEpsilon)
    {
        long n = roundedUpper - roundedLower + 1;
        if (n < 1 || n > 50_000_000)
        {
            throw new ArgumentOutOfRangeException(nameof(roundedUpper), n, "the privacy loss grid must have 1 to 50,000,000 points; raise the discretization interval");
        }
        var deltas = new double[n];
        double running = 1.0;
        for (long i = 0; i < n; i++)
        {
            // Hockey-stick divergence is non-increasing; enforce it against rounding (np.minimum.accumulate).
            running = Math.Min(running, Math.Clamp(deltaForEpsilon((roundedLower + i) * discretization), 0.0, 1.0));
            deltas[i] = running;
        }
        var probs = new double[n];
        if (n == 1)
        {
            probs[0] = 1 - deltas[0];
            return new PrivacyLossPmf(discretization, roundedLower, probs, deltas[0]);
        }
        double expD = Math.Exp(discretization);
        double expm1D = PrivacyMath.ExpMinusOne(discretization);
        double expm1MinusD = PrivacyMath.ExpMinusOne(-discretization);
        probs[0] = (1 - deltas[0]) + (deltas[1] - deltas[0]) / expm1D;
        for (long i = 1; i < n - 1; i++)
        {
            probs[i] = ((deltas[i + 1] - deltas[i]) - expD * (deltas[i] - deltas[i - 1])) / expm1D;
        }
        probs[n - 1] = (deltas[n - 1] - deltas[n - 2]) / expm1MinusD;
        for (long i = 0; i < n; i++)
        {
            probs[i] = Math.Max(0.0, probs[i]);
        }
        return new PrivacyLossPmf(discretization, roundedLower, probs, deltas[n - 1]);
    }

    /// <summary>The PMF of the sum of <paramref name="times"/> independent copies, by one FFT (dp_accounting common.self_convolve).</summary>
    public PrivacyLossPmf SelfCompose(long times, double tailMassTruncation = 1e-15)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(times, 1);
        if (times == 1)
        {
            return this;
        }
        (long lowerBound, long upperBound) = SelfConvolveBounds(Probs, times, tailMassTruncation);
        long outputLength = upperBound - lowerBound + 1;
        int size = Fft.NextPowerOfTwo(Math.Max(outputLength, Probs.Length));
        var re = new double[size];
        var im = new double[size];
        Array.Copy(Probs, re, Probs.Length);
        Fft.Transform(re, im, inverse: false);
        for (int k = 0; k < size; k++)
        {
            (re[k], im[k]) = ComplexPower(re[k], im[k], times);
        }
        Fft.Transform(re, im, inverse: true);
        // The DFT wraps modulo size; read the window [lowerBound, upperBound] (np.roll by -lowerBound).
        var output = new double[outputLength];
        for (long i = 0; i < outputLength; i++)
        {
            output[i] = re[(int)((lowerBound + i) % size)];
        }
        // Infinity mass after composition: tail + 1 - (1 - inf)^times, computed stably (pld_pmf.py self_compose).
        double infinity = tailMassTruncation - PrivacyMath.ExpMinusOne(times * PrivacyMath.LogOnePlus(-InfinityMass));
        return new PrivacyLossPmf(Discretization, LowerLoss * times + lowerBound, output, Math.Min(1.0, infinity));
    }

    /// <summary>Hockey-stick divergence: inf + sum over loss &gt; eps of (1 - e^(eps - loss)) p (pld_pmf.py _get_delta_for_epsilon).</summary>
    public double GetDeltaForEpsilon(double epsilon)
    {
        double delta = InfinityMass;
        for (int i = Probs.Length - 1; i >= 0; i--)
        {
            double loss = (LowerLoss + i) * Discretization;
            if (loss <= epsilon)
            {
                break;
            }
            delta += -PrivacyMath.ExpMinusOne(epsilon - loss) * Probs[i];
        }
        return delta;
    }

    /// <summary>Smallest epsilon whose hockey-stick divergence is at most delta (pld_pmf.py _get_epsilon_for_delta).</summary>
    public double GetEpsilonForDelta(double delta)
    {
        if (InfinityMass > delta)
        {
            return double.PositiveInfinity;
        }
        double massUpper = InfinityMass, massLower = 0;
        for (int i = Probs.Length - 1; i >= 0; i--)
        {
            double loss = (LowerLoss + i) * Discretization;
            if (massUpper > delta && massLower > 0 && Math.Log((massUpper - delta) / massLower) >= loss)
            {
                break;
            }
            massUpper += Probs[i];
            massLower += Math.Exp(-loss) * Probs[i];
            if (massUpper >= delta && massLower == 0)
            {
                return Math.Max(0, loss);
            }
        }
        if (massUpper <= massLower + delta)
        {
            return 0;
        }
        return Math.Log((massUpper - delta) / massLower);
    }

    // Chernoff bounds on the support of the self-convolution outside of which at most tailMassTruncation lies
    // (dp_accounting common.compute_self_convolve_bounds, orders +-1..20 divided by the list length).
    private static (long Lower, long Upper) SelfConvolveBounds(double[] probs, long times, double tailMassTruncation)
    {
        long upper = (probs.Length - 1) * times;
        long lower = 0;
        if (tailMassTruncation == 0)
        {
            return (lower, upper);
        }
        for (int k = -20; k <= 20; k++)
        {
            if (k == 0)
            {
                continue;
            }
            double order = (double)k / probs.Length;
            double logMgf = LogSumExpWeighted(probs, order);
            double bound = (times * logMgf + Math.Log(2 / tailMassTruncation)) / order;
            if (!double.IsFinite(bound))
            {
                continue;
            }
            if (order > 0)
            {
                upper = Math.Min(upper, (long)Math.Ceiling(bound));
            }
            else
            {
                lower = Math.Max(lower, (long)Math.Floor(bound));
            }
        }
        return (lower, upper);
    }

    // log sum_i p_i exp(i * order), the log moment generating function of the index. The exponentials are
    // formed by repeated multiplication from the largest index down (relative error ~n ulps, ample for a bound).
    private static double LogSumExpWeighted(double[] probs, double order)
    {
        int n = probs.Length;
        double step = Math.Exp(-Math.Abs(order));
        double sum = 0, weight = 1;
        if (order > 0)
        {
            // Terms relative to exp((n - 1) * order).
            for (int i = n - 1; i >= 0; i--, weight *= step)
            {
                sum += probs[i] * weight;
            }
            return (n - 1) * order + Math.Log(sum);
        }
        for (int i = 0; i < n; i++, weight *= step)
        {
            sum += probs[i] * weight;
        }
        return Math.Log(sum);
    }

    // z^n by binary exponentiation: log2(n) complex products, exact for |z| <= 1 up to rounding.
    private static (double Re, double Im) ComplexPower(double re, double im, long n)
    {
        double rr = 1, ri = 0;
        while (n > 0)
        {
            if ((n & 1) != 0)
            {
                (rr, ri) = (rr * re - ri * im, rr * im + ri * re);
            }
            (re, im) = (re * re - im * im, 2 * re * im);
            n >>= 1;
        }
        return (rr, ri);
    }
}
