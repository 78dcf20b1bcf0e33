namespace Federated.Aggregation.Privacy;

/// <summary>Which accountant turns a mechanism into (epsilon, delta).</summary>
public enum PrivacyAccountantKind
{
    /// <summary>Renyi DP with the Balle et al. 2020 conversion (Opacus-compatible).</summary>
    Rdp,

    /// <summary>Privacy loss distributions (dp_accounting-compatible), tighter.</summary>
    Pld,
}

/// <summary>Budget planning for the Poisson-subsampled Gaussian: epsilon for a plan, noise for a target, rounds for a noise.</summary>
public static class PrivacyPlanner
{
    /// <summary>Relative precision of <see cref="NoiseForEpsilon"/> (the issue asks for 1e-4).</summary>
    public const double NoiseRelativeTolerance = NoiseSearch.RelativeTolerance;

    // PLD grids grow like 1/z^2; below this the discretized distribution gets too large to be practical.
    private const double PldMinimumNoise = 0.2;
    private const double MaximumNoise = 1e4;

    /// <summary>Epsilon after <paramref name="rounds"/> rounds with noise multiplier z and sampling rate q.</summary>
    public static PrivacySpent Epsilon(PrivacyAccountantKind kind, double noiseMultiplier, double samplingRate, long rounds, double delta)
    {
        Validate(noiseMultiplier, samplingRate, rounds, delta);
        if (kind == PrivacyAccountantKind.Pld)
        {
            return PldAccountant.Epsilon(samplingRate, noiseMultiplier, rounds, delta);
        }
        var accountant = new RdpAccountant();
        accountant.ComposeSubsampledGaussian(samplingRate, noiseMultiplier, rounds);
        return accountant.GetEpsilon(delta);
    }

    /// <summary>
    /// Smallest noise multiplier whose epsilon after the rounds is at most the target, found by bisection to
    /// relative <see cref="NoiseRelativeTolerance"/>; the returned value always meets the target.
    /// </summary>
    public static double NoiseForEpsilon(PrivacyAccountantKind kind, double targetEpsilon, double delta, double samplingRate, long rounds)
    {
        if (!(targetEpsilon > 0) || double.IsInfinity(targetEpsilon))
        {
            throw new ArgumentOutOfRangeException(nameof(targetEpsilon), targetEpsilon, "target epsilon must be a finite number > 0");
        }
        Validate(1.0, samplingRate, rounds, delta);
        double floor = kind == PrivacyAccountantKind.Pld ? PldMinimumNoise : 1e-3;
        // PLD evaluations are costly and grow like 1/z^2, so start PLD at the RDP answer (PLD needs no more
        // noise than RDP) and step down gently; RDP starts at 1 and doubles or halves.
        double start = kind == PrivacyAccountantKind.Pld
            ? NoiseForEpsilon(PrivacyAccountantKind.Rdp, targetEpsilon, delta, samplingRate, rounds)
            : 1.0;
        return NoiseSearch.Smallest(z => Epsilon(kind, z, samplingRate, rounds, delta).Epsilon, targetEpsilon,
            start, kind == PrivacyAccountantKind.Pld ? 0.85 : 0.5, floor, MaximumNoise,
            reason => new ArgumentOutOfRangeException(nameof(targetEpsilon), targetEpsilon,
                reason + (kind == PrivacyAccountantKind.Pld ? "; plan with the RDP accountant or a smaller target" : "")));
    }

    /// <summary>Largest number of rounds (0 if none) whose epsilon stays at most the target, up to <paramref name="maxRounds"/>.</summary>
    public static long MaxRounds(PrivacyAccountantKind kind, double noiseMultiplier, double targetEpsilon, double delta, double samplingRate, long maxRounds = 10_000_000)
    {
        Validate(noiseMultiplier, samplingRate, 1, delta);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRounds, 1);
        Func<long, double> eps;
        if (kind == PrivacyAccountantKind.Rdp)
        {
            // One RDP vector per step; composition is a multiplication, so every probe is cheap.
            double[] perStep = RdpAnalysis.SubsampledGaussian(samplingRate, noiseMultiplier, RdpOrders.Default);
            var scaled = new double[perStep.Length];
            eps = t =>
            {
                for (int i = 0; i < perStep.Length; i++)
                {
                    scaled[i] = perStep[i] * t;
                }
                return RdpAnalysis.Epsilon(RdpOrders.Default, scaled, delta).Epsilon;
            };
        }
        else
        {
            eps = t => PldAccountant.Epsilon(samplingRate, noiseMultiplier, t, delta).Epsilon;
        }
        if (eps(1) > targetEpsilon)
        {
            return 0;
        }
        long lo = 1, hi = 2;
        while (hi <= maxRounds && eps(hi) <= targetEpsilon)
        {
            lo = hi;
            hi *= 2;
        }
        if (hi > maxRounds)
        {
            if (eps(maxRounds) <= targetEpsilon)
            {
                return maxRounds;
            }
            hi = maxRounds;
        }
        // Invariant: eps(lo) <= target < eps(hi).
        while (hi - lo > 1)
        {
            long mid = lo + (hi - lo) / 2;
            if (eps(mid) <= targetEpsilon)
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

    private static void Validate(double noiseMultiplier, double samplingRate, long rounds, double delta)
    {
        if (!(noiseMultiplier > 0) || double.IsInfinity(noiseMultiplier))
        {
            throw new ArgumentOutOfRangeException(nameof(noiseMultiplier), noiseMultiplier, "noise multiplier must be a finite number > 0");
        }
        if (!(samplingRate > 0 && samplingRate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(samplingRate), samplingRate, "sampling rate must be in (0, 1]");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        if (!(delta > 0 && delta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(delta), delta, "delta must be in (0, 1)");
        }
    }
}
