namespace Federated.Aggregation.Privacy;

/// <summary>
/// The one search for the smallest noise multiplier that meets a target epsilon, whatever the mechanism and the
/// accountant: the officer's planner and every run's pricing call it with their own epsilon function.
/// </summary>
internal static class NoiseSearch
{
    /// <summary>Relative width of the final bracket (the officer's planner promises 1e-4).</summary>
    public const double RelativeTolerance = 1e-5;

    /// <summary>
    /// Smallest z in [floor, max] with epsilonOf(z) &lt;= target, to <see cref="RelativeTolerance"/>; the returned z
    /// always meets the target (it is the upper end of a bracket whose lower end does not). epsilonOf must be
    /// non-increasing in z. Throws what <paramref name="refuse"/> builds from the reason when no z in range does.
    /// </summary>
    /// <param name="epsilonOf">Epsilon of the plan at noise multiplier z.</param>
    /// <param name="target">The target epsilon.</param>
    /// <param name="start">First probe; the bracket grows (x2) or shrinks (x <paramref name="stepDown"/>) from it.</param>
    /// <param name="stepDown">Factor in (0, 1) applied while the target is still met.</param>
    /// <param name="floor">Smallest z worth trying.</param>
    /// <param name="max">Largest z worth trying.</param>
    /// <param name="refuse">Builds the exception for a target that cannot be met in range.</param>
    public static double Smallest(Func<double, double> epsilonOf, double target, double start, double stepDown, double floor, double max,
        Func<string, Exception> refuse)
    {
        ArgumentNullException.ThrowIfNull(epsilonOf);
        ArgumentNullException.ThrowIfNull(refuse);
        double lo, hi = start;
        if (epsilonOf(hi) > target)
        {
            do
            {
                lo = hi;
                hi *= 2;
                if (hi > max)
                {
                    throw refuse($"no noise multiplier up to {max} reaches this target");
                }
            }
            while (epsilonOf(hi) > target);
        }
        else
        {
            while (true)
            {
                lo = Math.Max(hi * stepDown, floor);
                if (epsilonOf(lo) > target)
                {
                    break;
                }
                if (lo <= floor)
                {
                    throw refuse($"the target is met with a noise multiplier below {floor}");
                }
                hi = lo;
            }
        }
        // Invariant: eps(lo) > target >= eps(hi). Illinois regula falsi (few evaluations, which matters for PLD),
        // falling back to bisection whenever a step fails to halve the bracket, so it ends like bisection would.
        double fLo = epsilonOf(lo) - target, fHi = epsilonOf(hi) - target;
        int side = 0;
        while (hi - lo > RelativeTolerance * hi)
        {
            double width = hi - lo;
            double mid = double.IsFinite(fLo) ? hi - fHi * (hi - lo) / (fHi - fLo) : 0.5 * (lo + hi);
            // Keep the probe strictly inside and away from the ends by a fraction of the tolerance.
            double guard = 0.25 * RelativeTolerance * hi;
            mid = Math.Clamp(mid, lo + guard, hi - guard);
            double fMid = epsilonOf(mid) - target;
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
                double fBisect = epsilonOf(bisect) - target;
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
}
