namespace Federated.Aggregation.Privacy;

/// <summary>An (epsilon, delta) guarantee and, for RDP, the order that gave it.</summary>
public sealed record PrivacySpent(double Epsilon, double Delta, double? Order);

/// <summary>The Renyi orders the accountants evaluate.</summary>
public static class RdpOrders
{
    /// <summary>Opacus's RDPAccountant.DEFAULT_ALPHAS: 1.1..10.9 step 0.1, then 12..63.</summary>
    public static IReadOnlyList<double> Opacus { get; } = BuildOpacus();

    /// <summary>Opacus's list plus 11, 128, 256, 512 and 1024 (sorted); the project default.</summary>
    public static IReadOnlyList<double> Default { get; } =
        BuildOpacus().Concat([11.0, 128.0, 256.0, 512.0, 1024.0]).Order().ToArray();

    private static double[] BuildOpacus()
    {
        var orders = new List<double>();
        for (int x = 1; x < 100; x++)
        {
            // Same expression as Python's 1 + x / 10.0 so the doubles are bit-identical.
            orders.Add(1 + x / 10.0);
        }
        for (int a = 12; a < 64; a++)
        {
            orders.Add(a);
        }
        return orders.ToArray();
    }
}

/// <summary>RDP of the mechanisms this system runs, and the RDP to (epsilon, delta) conversion.</summary>
public static class RdpAnalysis
{
    /// <summary>RDP at one order of one step of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar, Zhang 2019; Opacus rdp.py _compute_rdp).</summary>
    public static double SubsampledGaussian(double samplingRate, double noiseMultiplier, double order)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samplingRate, 0.0);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(samplingRate, 1.0);
        ArgumentOutOfRangeException.ThrowIfNegative(noiseMultiplier);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(order, 1.0);
        if (samplingRate == 0)
        {
            return 0;
        }
        if (noiseMultiplier == 0)
        {
            return double.PositiveInfinity;
        }
        if (samplingRate == 1.0)
        {
            // Plain Gaussian mechanism: alpha / (2 sigma^2) (Mironov 2017, Proposition 7).
            return order / (2 * noiseMultiplier * noiseMultiplier);
        }
        if (double.IsPositiveInfinity(order))
        {
            return double.PositiveInfinity;
        }
        return ComputeLogA(samplingRate, noiseMultiplier, order) / (order - 1);
    }

    /// <summary>RDP per order of one step of the Poisson-subsampled Gaussian mechanism.</summary>
    public static double[] SubsampledGaussian(double samplingRate, double noiseMultiplier, IReadOnlyList<double> orders)
    {
        ArgumentNullException.ThrowIfNull(orders);
        var rdp = new double[orders.Count];
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] = SubsampledGaussian(samplingRate, noiseMultiplier, orders[i]);
        }
        return rdp;
    }

    /// <summary>
    /// RDP of the (distributed) Skellam mechanism whose summed noise has the given variance, for integer-valued
    /// sensitivities l1 and l2 (Agarwal, Kairouz, Liu 2021, arXiv:2110.04995, the Skellam RDP theorem; Sk(mu, mu) has variance 2 mu):
    /// eps(a) = a l2^2 / (2 var) + min(((2a - 1) l2^2 + 6 l1) / (4 var^2), 3 l1 / (2 var)).
    /// The theorem holds for integer orders only, so a fractional order a is charged the bound at ceil(a): RDP is
    /// non-decreasing in the order, so (a, eps(ceil a))-RDP holds, and the conversion to (epsilon, delta) at a stays valid.
    /// </summary>
    public static double[] Skellam(double l1Sensitivity, double l2Sensitivity, double variance, IReadOnlyList<double> orders)
    {
        ArgumentNullException.ThrowIfNull(orders);
        ArgumentOutOfRangeException.ThrowIfNegative(l1Sensitivity);
        ArgumentOutOfRangeException.ThrowIfNegative(l2Sensitivity);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(variance);
        double l2Squared = l2Sensitivity * l2Sensitivity;
        var rdp = new double[orders.Count];
        for (int i = 0; i < rdp.Length; i++)
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(orders[i], 1.0, nameof(orders));
            double a = Math.Ceiling(orders[i]);
            double gaussianPart = a * l2Squared / (2 * variance);
            double correction = Math.Min(((2 * a - 1) * l2Squared + 6 * l1Sensitivity) / (4 * variance * variance),
                3 * l1Sensitivity / (2 * variance));
            rdp[i] = gaussianPart + correction;
        }
        return rdp;
    }

    /// <summary>
    /// RDP of the multivariate discrete Gaussian N_Z(0, sigma^2)^d on an integer-valued query whose L2 sensitivity squared
    /// is given: a l2^2 / (2 sigma^2) at every real order a > 1 (Canonne, Kamath, Steinke 2020, arXiv:2004.00010,
    /// Thm 14: (1/2) eps^2-concentrated DP with eps^2 = l2^2 / sigma^2, which is exactly this RDP curve).
    /// </summary>
    public static double[] DiscreteGaussian(double l2SensitivitySquared, double sigmaSquared, IReadOnlyList<double> orders)
    {
        ArgumentNullException.ThrowIfNull(orders);
        ArgumentOutOfRangeException.ThrowIfNegative(l2SensitivitySquared);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(sigmaSquared);
        var rdp = new double[orders.Count];
        for (int i = 0; i < rdp.Length; i++)
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(orders[i], 1.0, nameof(orders));
            rdp[i] = orders[i] * l2SensitivitySquared / (2 * sigmaSquared);
        }
        return rdp;
    }

    /// <summary>
    /// RDP of any mechanism run on a Poisson sample of rate q (add/remove neighbours), from its RDP at integer orders,
    /// by the general upper bound of Zhu and Wang 2019 (ICML, "Poisson subsampled Renyi differential privacy", Thm 6):
    /// eps'(a) &lt;= 1/(a-1) ln{ (1-q)^(a-1) (a q - q + 1) + C(a,2) q^2 (1-q)^(a-2) e^eps(2) + 3 sum_{l=3..a} C(a,l) (1-q)^(a-l) q^l e^((l-1) eps(l)) },
    /// evaluated at ceil(a) for a fractional order and never above the unsampled eps(ceil a) (sampling never hurts).
    /// </summary>
    /// <param name="rdpAtInteger">The mechanism's RDP at an integer order >= 2.</param>
    public static double[] PoissonSubsampled(Func<int, double> rdpAtInteger, double samplingRate, IReadOnlyList<double> orders)
    {
        ArgumentNullException.ThrowIfNull(rdpAtInteger);
        ArgumentNullException.ThrowIfNull(orders);
        if (!(samplingRate > 0 && samplingRate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(samplingRate), samplingRate, "sampling rate must be in (0, 1]");
        }
        var rdp = new double[orders.Count];
        for (int i = 0; i < rdp.Length; i++)
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(orders[i], 1.0, nameof(orders));
            int a = checked((int)Math.Ceiling(orders[i]));
            double plain = rdpAtInteger(a);
            rdp[i] = samplingRate == 1 ? plain : Math.Min(plain, ZhuWangBound(rdpAtInteger, samplingRate, a));
        }
        return rdp;
    }

    private static double ZhuWangBound(Func<int, double> eps, double q, int a)
    {
        double logQ = Math.Log(q), log1MinusQ = PrivacyMath.LogOnePlus(-q);
        double logSum = (a - 1) * log1MinusQ + PrivacyMath.LogOnePlus((a - 1) * q);
        double logBinom = Math.Log(a) + Math.Log(a - 1) - Math.Log(2); // ln C(a, 2)
        logSum = PrivacyMath.LogAdd(logSum, logBinom + 2 * logQ + (a - 2) * log1MinusQ + eps(2));
        for (int l = 3; l <= a; l++)
        {
            logBinom += Math.Log(a - l + 1) - Math.Log(l);
            logSum = PrivacyMath.LogAdd(logSum, Math.Log(3) + logBinom + l * logQ + (a - l) * log1MinusQ + (l - 1) * eps(l));
        }
        return logSum / (a - 1);
    }

    /// <summary>
    /// Smallest epsilon over the orders for the composed RDP, with the conversion of Balle et al. 2020 (Theorem 21)
    /// as in Opacus get_privacy_spent: eps = rdp - (ln delta + ln a) / (a - 1) + ln((a - 1) / a).
    /// </summary>
    public static PrivacySpent Epsilon(IReadOnlyList<double> orders, ReadOnlySpan<double> rdp, double delta)
    {
        ArgumentNullException.ThrowIfNull(orders);
        if (orders.Count != rdp.Length || orders.Count == 0)
        {
            throw new ArgumentException($"orders ({orders.Count}) and rdp ({rdp.Length}) must have the same non-zero length", nameof(rdp));
        }
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(delta, 0.0);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(delta, 1.0);
        if (!rdp.ContainsAnyExcept(0.0))
        {
            // Zero at every order: the outputs are identically distributed, epsilon 0 (the conversion is loose at zero).
            return new PrivacySpent(0.0, delta, null);
        }
        double best = double.PositiveInfinity;
        double? bestOrder = null;
        double logDelta = Math.Log(delta);
        for (int i = 0; i < rdp.Length; i++)
        {
            double a = orders[i];
            double eps = rdp[i] - (logDelta + Math.Log(a)) / (a - 1) + Math.Log((a - 1) / a);
            // Strict '<' keeps the first minimum, as numpy's nanargmin does; NaN never compares less.
            if (eps < best)
            {
                best = eps;
                bestOrder = a;
            }
        }
        return new PrivacySpent(Math.Max(0.0, best), delta, bestOrder);
    }

    // log(A_alpha), Section 3.3 of Mironov, Talwar, Zhang 2019 (arXiv:1908.10530); Opacus _compute_log_a.
    internal static double ComputeLogA(double q, double sigma, double alpha) =>
        alpha == Math.Floor(alpha) ? ComputeLogAInteger(q, sigma, (int)alpha) : ComputeLogAFractional(q, sigma, alpha);

    // Opacus _compute_log_a_for_int_alpha: log sum_i C(a, i) q^i (1-q)^(a-i) exp((i^2 - i) / (2 sigma^2)).
    private static double ComputeLogAInteger(double q, double sigma, int alpha)
    {
        double logA = double.NegativeInfinity;
        double logQ = Math.Log(q), log1MinusQ = Math.Log(1 - q);
        double logBinom = 0; // ln C(alpha, 0)
        for (int i = 0; i <= alpha; i++)
        {
            double logCoef = logBinom + i * logQ + (alpha - i) * log1MinusQ;
            double s = logCoef + ((double)i * i - i) / (2 * sigma * sigma);
            logA = PrivacyMath.LogAdd(logA, s);
            logBinom += Math.Log(alpha - i) - Math.Log(i + 1.0);
        }
        return logA;
    }

    // Opacus _compute_log_a_for_frac_alpha: the two half-line integrals as signed series in log space.
    private static double ComputeLogAFractional(double q, double sigma, double alpha)
    {
        double logA0 = double.NegativeInfinity, logA1 = double.NegativeInfinity;
        double z0 = sigma * sigma * Math.Log(1 / q - 1) + 0.5;
        double logQ = Math.Log(q), log1MinusQ = Math.Log(1 - q);
        double sqrt2Sigma = Math.Sqrt(2) * sigma;
        double log05 = Math.Log(0.5);
        double coef = 1.0; // binom(alpha, 0), generalized binomial updated by (alpha - i) / (i + 1)
        for (int i = 0; ; i++)
        {
            double logCoef = Math.Log(Math.Abs(coef));
            double j = alpha - i;
            double logT0 = logCoef + i * logQ + j * log1MinusQ;
            double logT1 = logCoef + j * logQ + i * log1MinusQ;
            double logE0 = log05 + PrivacyMath.LogErfc((i - z0) / sqrt2Sigma);
            double logE1 = log05 + PrivacyMath.LogErfc((z0 - j) / sqrt2Sigma);
            double logS0 = logT0 + ((double)i * i - i) / (2 * sigma * sigma) + logE0;
            double logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
            if (coef > 0)
            {
                logA0 = PrivacyMath.LogAdd(logA0, logS0);
                logA1 = PrivacyMath.LogAdd(logA1, logS1);
            }
            else
            {
                logA0 = PrivacyMath.LogSub(logA0, logS0);
                logA1 = PrivacyMath.LogSub(logA1, logS1);
            }
            if (Math.Max(logS0, logS1) < -30 || i > 100_000)
            {
                break;
            }
            coef *= (alpha - i) / (i + 1.0);
        }
        return PrivacyMath.LogAdd(logA0, logA1);
    }
}
