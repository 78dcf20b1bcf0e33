using System.Numerics;

namespace Federated.Aggregation.Privacy;

/// <summary>
/// Calibrated central mechanism: clients round their rotated, scaled updates to integers without noise (the
/// <see cref="Quantizer"/>); the coordinator adds discrete Gaussian noise N_Z(0, sigma^2) as integers to the modular
/// sum, in the ring (<see cref="AddNoise"/>); the scale keeps the clients' part of every sum inside the ring with
/// certainty.
/// </summary>
/// <remarks>
/// <para>
/// Why the noise goes into the ring: the released value is then a function of (S + x + N) mod 2^b, that is a
/// post-processing of the integer mechanism S + x + N whose sensitivity to one client's vector x is its norm bound,
/// whatever the other clients sent (a malicious client can push the sum anywhere in the ring). Noise added after
/// decoding instead perturbs centre(S + x mod 2^b), whose change can be as large as the ring when the sum wraps.
/// </para>
/// <para>
/// The hard bound: every coordinate of a client's rounded vector is at most sqrt(NormBoundSquared) in magnitude
/// (|x_i| &lt;= |x|_2), so n honest clients sum to at most n * that per coordinate. The scale is the largest for which
/// that sum plus <see cref="NoiseBound"/> stays at most 2^(b-1) - 1, so the centred decoding is exact whenever every
/// noise coordinate is within the bound. The noise itself is not truncated: clipping its tail would change the
/// distribution the Canonne-Kamath-Steinke bound prices (the shifted supports would differ, an infinite Renyi
/// divergence) and need an extra delta. Instead <see cref="NoiseBound"/> is exceeded in some coordinate with
/// probability at most <see cref="NoiseBoundFailureProbability"/> (2^-128) a round, and such a wrap costs accuracy
/// only, never privacy, by the post-processing argument above.
/// </para>
/// </remarks>
public sealed class CentralGaussianPlan
{
    /// <summary>Per-round probability bound that some noise coordinate exceeds <see cref="NoiseBound"/>.</summary>
    public const double NoiseBoundFailureProbability = 2.9387358770557188e-39; // 2^-128

    private CentralGaussianPlan(DSkellamPlan quantizer, ulong sigmaSquared, long clientCoordinateBound, long noiseBound)
    {
        Quantizer = quantizer;
        SigmaSquared = sigmaSquared;
        ClientCoordinateBound = clientCoordinateBound;
        NoiseBound = noiseBound;
    }

    /// <summary>The clients' encoding: rotation, this plan's scale, conditional rounding, no noise (noise multiplier 0).</summary>
    public DSkellamPlan Quantizer { get; }

    /// <summary>sigma^2 of the discrete Gaussian, integer units: ceil(z^2 * NormBoundSquared), so at least the planned noise.</summary>
    public ulong SigmaSquared { get; }

    /// <summary>Bound on any coordinate of one client's rounded vector: floor(sqrt(NormBoundSquared)).</summary>
    public long ClientCoordinateBound { get; }

    /// <summary>Noise magnitude per coordinate the ring leaves room for: MaxClients * ClientCoordinateBound + NoiseBound &lt;= 2^(b-1) - 1.</summary>
    public long NoiseBound { get; }

    /// <summary>
    /// Adds N_Z(0, sigma^2) to every coordinate of the modular sum, modulo 2^b, from exact integer randomness
    /// (cryptographic by default).
    /// </summary>
    public void AddNoise(Span<uint> modularSum, IRandomSource? random = null)
    {
        if (modularSum.Length != Quantizer.PaddedDimension)
        {
            throw new ArgumentException($"modular sum has {modularSum.Length} values; the plan expects {Quantizer.PaddedDimension}", nameof(modularSum));
        }
        var sampler = new DiscreteGaussianSampler(SigmaSquared, random, modularSum.Length);
        int bits = Quantizer.Parameters.Bits;
        ulong mask = (1UL << bits) - 1;
        for (int i = 0; i < modularSum.Length; i++)
        {
            if (modularSum[i] > mask)
            {
                throw new ArgumentOutOfRangeException(nameof(modularSum), modularSum[i], $"value at {i} is outside Z_(2^{bits})");
            }
            // Two's complement addition then masking is addition modulo 2^b, negative noise included.
            modularSum[i] = (uint)((modularSum[i] + (ulong)sampler.Next()) & mask);
        }
    }

    /// <summary>
    /// Picks the largest scale s with MaxClients * floor(sqrt(B(s))) + T(s) &lt;= 2^(b-1) - 1, where B(s) is the
    /// conditional-rounding norm bound at s * C and T(s) the noise bound for sigma^2 = ceil(z^2 B(s)).
    /// Throws <see cref="PrivacyPlanException"/> on "bits" when no positive scale fits.
    /// </summary>
    /// <param name="parameters">Dimension, bits, clip norm, noise multiplier z, MaxClients and MinClients; beta; WrapStdDevs is unused.</param>
    public static CentralGaussianPlan Calibrate(DSkellamParameters parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(parameters.NoiseMultiplier > 0) || double.IsInfinity(parameters.NoiseMultiplier))
        {
            throw new PrivacyPlanException("noise_multiplier", parameters.NoiseMultiplier, "central noise needs a finite noise multiplier > 0");
        }
        DSkellamParameters quantizing = parameters with { NoiseMultiplier = 0 };
        DSkellamPlan.WithScale(quantizing, 1.0); // validates the shared fields once
        int padded = Fft.NextPowerOfTwo(parameters.Dimension);
        // The smallest positive scale worth asking for: below it the update is lost in rounding whatever the ring.
        double smallest = 1e-9 / parameters.ClipNorm;
        if (Fit(parameters, padded, smallest) is null)
        {
            throw new PrivacyPlanException("bits", parameters.Bits, MinimumBitsAdvice(parameters, padded, smallest));
        }
        double lo = smallest, hi = Math.Max(1.0, 2 * smallest);
        while (Fit(parameters, padded, hi) is not null)
        {
            lo = hi;
            hi *= 2;
        }
        // Fit is monotone in s (every bound grows with s), so bisection finds the largest fitting scale.
        while (hi - lo > 1e-12 * hi)
        {
            double mid = lo < 1e-3 * hi ? Math.Sqrt(lo * hi) : 0.5 * (lo + hi);
            if (Fit(parameters, padded, mid) is not null)
            {
                lo = mid;
            }
            else
            {
                hi = mid;
            }
        }
        (ulong sigmaSquared, long coordinateBound, long noiseBound) = Fit(parameters, padded, lo)!.Value;
        return new CentralGaussianPlan(DSkellamPlan.WithScale(quantizing, lo), sigmaSquared, coordinateBound, noiseBound);
    }

    // (sigma^2, coordinate bound, noise bound) when n clients plus the noise bound fit the ring at scale s; null otherwise.
    private static (ulong SigmaSquared, long CoordinateBound, long NoiseBound)? Fit(DSkellamParameters p, int padded, double scale)
    {
        double normBoundSquared = Math.Floor(DSkellamPlan.RoundedNormBoundSquared(scale * p.ClipNorm, padded, p.Beta));
        double limit = Math.Pow(2, p.Bits - 1) - 1;
        if (!(normBoundSquared < 4.611686018427387904e18)) // 2^62
        {
            return null;
        }
        long coordinateBound = (long)DiscreteGaussianSampler.FloorSqrt((ulong)normBoundSquared);
        BigInteger sigmaSquared = SigmaSquaredFor(p.NoiseMultiplier, (ulong)normBoundSquared);
        if (sigmaSquared > DiscreteGaussianSampler.MaxSigmaSquared || sigmaSquared.IsZero)
        {
            return null;
        }
        long noiseBound = NoiseBoundFor((ulong)sigmaSquared, padded);
        if ((double)p.MaxClients * coordinateBound + noiseBound > limit)
        {
            return null;
        }
        return ((ulong)sigmaSquared, coordinateBound, noiseBound);
    }

    /// <summary>ceil(z^2 * normBoundSquared) computed exactly from the double z (every double is a dyadic rational).</summary>
    internal static BigInteger SigmaSquaredFor(double noiseMultiplier, ulong normBoundSquared)
    {
        long bits = BitConverter.DoubleToInt64Bits(noiseMultiplier);
        int exponent = (int)((bits >> 52) & 0x7FF);
        long mantissa = bits & ((1L << 52) - 1);
        if (exponent == 0)
        {
            exponent = 1;
        }
        else
        {
            mantissa |= 1L << 52;
        }
        exponent -= 1075; // z = mantissa * 2^exponent
        BigInteger numerator = (BigInteger)mantissa * mantissa * normBoundSquared;
        int shift = 2 * exponent;
        if (shift >= 0)
        {
            return numerator << shift;
        }
        BigInteger denominator = BigInteger.One << -shift;
        return BigInteger.DivRem(numerator, denominator, out BigInteger remainder) + (remainder.IsZero ? 0 : 1);
    }

    /// <summary>
    /// A T (within sigma/64 of the smallest this bound allows) with P(some |X_i| &gt;= T) &lt;= 2^-128 over d independent N_Z(0, sigma^2) coordinates, from
    /// P(|X| &gt;= m) &lt;= 2 exp(-m^2 / (2 sigma^2)) / ((1 - exp(-m / sigma^2)) Z), Z = sum_k exp(-k^2 / (2 sigma^2)) &gt;= max(1, sigma sqrt(2 pi) - 1)
    /// (the tail sum dominated by a geometric series since k^2 &gt;= m^2 + 2 m (k - m); Z by the integral of a unimodal function).
    /// </summary>
    internal static long NoiseBoundFor(ulong sigmaSquared, int dimension)
    {
        double s2 = sigmaSquared;
        double logZ = Math.Log(Math.Max(1.0, Math.Sqrt(s2) * Math.Sqrt(2 * Math.PI) - 1));
        double target = -128 * Math.Log(2);
        double LogFailure(double m) =>
            Math.Log(dimension) + Math.Log(2) - m * m / (2 * s2) - Math.Log(-PrivacyMath.ExpMinusOne(-m / s2)) - logZ;
        // Start below the answer (the geometric factor is >= 1) and walk up.
        double m = Math.Max(1, Math.Floor(Math.Sqrt(2 * s2 * Math.Max(0, Math.Log(2.0 * dimension) - target - logZ))));
        double step = Math.Max(1, Math.Ceiling(Math.Sqrt(s2) / 64));
        while (LogFailure(m) > target)
        {
            m += step;
        }
        return (long)m; // every |X_i| <= m - 1 but with the failure probability; m leaves one unit to spare
    }

    private static string MinimumBitsAdvice(DSkellamParameters p, int padded, double smallest)
    {
        for (int bits = p.Bits + 1; bits <= 32; bits++)
        {
            if (Fit(p with { Bits = bits }, padded, smallest) is not null)
            {
                return $"a {p.Bits}-bit ring cannot hold {p.MaxClients} clients' rounded updates of dimension {p.Dimension} plus the central noise; use bits >= {bits} (at most 32)";
            }
        }
        return $"no ring up to 32 bits can hold {p.MaxClients} clients' rounded updates of dimension {p.Dimension} plus the central noise; use fewer clients, a smaller dimension or less noise";
    }
}
