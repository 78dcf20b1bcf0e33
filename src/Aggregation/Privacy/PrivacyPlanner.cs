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
    public const double NoiseRelativeTolerance = 1e-5;

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
        Func<double, double> eps = z => Epsilon(kind, z, samplingRate, rounds, delta).Epsilon;
        // PLD evaluations are costly and grow like 1/z^2, so start PLD at the RDP answer (PLD needs no more
        // noise than RDP) and step down gently; RDP starts at 1 and doubles or halves.
        double start = kind == PrivacyAccountantKind.Pld
            ? NoiseForEpsilon(PrivacyAccountantKind.Rdp, targetEpsilon, delta, samplingRate, rounds)
            : 1.0;
        double factor = kind == PrivacyAccountantKind.Pld ? 0.85 : 0.5;
        double lo, hi = start;
        if (eps(hi) > targetEpsilon)
        {
            do
            {
                lo = hi;
                hi *= 2;
                if (hi > MaximumNoise)
                {
                    throw new ArgumentOutOfRangeException(nameof(targetEpsilon), targetEpsilon, $"no noise multiplier up to {MaximumNoise} reaches this target");
                }
            }
            while (eps(hi) > targetEpsilon);
        }
        else
        {
            while (true)
            {
                lo = Math.Max(hi * factor, floor);
                if (eps(lo) > targetEpsilon)
                {
                    break;
                }
                if (lo <= floor)
                {
                    throw new ArgumentOutOfRangeException(nameof(targetEpsilon), targetEpsilon,
                        $"the target is met with a noise multiplier below {floor}; plan with the RDP accountant or a smaller target");
                }
                hi = lo;
            }
        }
        // Invariant: eps(lo) > target >= eps(hi). Illinois regula falsi (few evaluations, which matters for PLD),
        // falling back to bisection whenever a step fails to halve the bracket, so it ends like bisection would.
        double fLo = eps(lo) - targetEpsilon, fHi = eps(hi) - targetEpsilon;
        int side = 0;
        while (hi - lo > NoiseRelativeTolerance * hi)
        {
            double width = hi - lo;
            double mid = double.IsFinite(fLo) ? hi - fHi * (hi - lo) / (fHi - fLo) : 0.5 * (lo + hi);
            // Keep the probe strictly inside and away from the ends by a fraction of the tolerance.
            double guard = 0.25 * NoiseRelativeTolerance * hi;
            mid = Math.Clamp(mid, lo + guard, hi - guard);
            double fMid = eps(mid) - targetEpsilon;
            if (fMid <= 0)
            {
                hi = mid;
                fHi = fMid;
                if (side == -1)
                {
                    fLo *= 0.5;
                }
                side = -1;
            }
            else
            {
                lo = mid;
                fLo = fMid;
                if (side == 1)
                {
                    fHi *= 0.5;
                }
                side = 1;
            }
            if (hi - lo > 0.5 * width)
            {
                double bisect = 0.5 * (lo + hi);
                double fBisect = eps(bisect) - targetEpsilon;
                if (fBisect <= 0)
                {
                    hi = bisect;
                    fHi = fBisect;
                }
                else
                {
                    lo = bisect;
                    fLo = fBisect;
                }
                side = 0;
            }
        }
        return hi;
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
