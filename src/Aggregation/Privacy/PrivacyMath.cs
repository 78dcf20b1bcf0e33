namespace Federated.Aggregation.Privacy;

/// <summary>Special functions the accountants need, accurate in the far tails where the BCL has nothing.</summary>
internal static class PrivacyMath
{
    private const double SqrtPi = 1.7724538509055160273;
    private const double LogSqrtPi = 0.57236494292470008707;
    private const double Sqrt2 = 1.4142135623730950488;

    // Below this erfc = 1 - erf(series) loses nothing (erfc > 0.47). Between it and TaylorLimit a Taylor
    // expansion around the nearest node k/16 is used (the continued fraction needs hundreds of terms there);
    // above TaylorLimit the continued fraction keeps full relative accuracy in a few dozen terms.
    private const double SeriesLimit = 0.5;
    private const double TaylorLimit = 4.0;
    private const int NodesPerUnit = 16;

    // erfc and 2/sqrt(pi) exp(-x^2) at the nodes k/16, 8 <= k <= 64, from the continued fraction.
    private static readonly (double Erfc, double Density)[] s_nodes = BuildNodes();

    /// <summary>erfc(x) to near double precision, relative accuracy kept in the upper tail.</summary>
    public static double Erfc(double x)
    {
        if (double.IsNaN(x))
        {
            return double.NaN;
        }
        if (x < 0)
        {
            return 2.0 - Erfc(-x);
        }
        if (x < SeriesLimit)
        {
            return 1.0 - ErfSeries(x);
        }
        if (x < TaylorLimit)
        {
            return ErfcTaylor(x);
        }
        return Math.Exp(-x * x) / SqrtPi * ErfcContinuedFraction(x);
    }

    /// <summary>ln(erfc(x)) without underflow for large x (Opacus's _log_erfc: log 2 + log_ndtr(-x*sqrt 2)).</summary>
    public static double LogErfc(double x)
    {
        if (double.IsNaN(x))
        {
            return double.NaN;
        }
        if (x < TaylorLimit)
        {
            return Math.Log(Erfc(x));
        }
        return -x * x - LogSqrtPi + Math.Log(ErfcContinuedFraction(x));
    }

    /// <summary>Standard normal CDF Phi(x) = erfc(-x/sqrt 2)/2.</summary>
    public static double NormalCdf(double x) => 0.5 * Erfc(-x / Sqrt2);

    /// <summary>ln Phi(x), finite far into the lower tail (scipy's log_ndtr).</summary>
    public static double LogNormalCdf(double x) => LogErfc(-x / Sqrt2) - Math.Log(2.0);

    /// <summary>Phi^-1(exp(logP)) for logP &lt;= ln 0.5, by bisection on ln Phi (monotone, so exact to rounding).</summary>
    public static double NormalQuantileFromLog(double logP)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(logP, Math.Log(0.5));
        double lo = -60, hi = 0;
        for (int i = 0; i < 200 && hi - lo > 1e-15; i++)
        {
            double mid = 0.5 * (lo + hi);
            if (LogNormalCdf(mid) < logP)
            {
                lo = mid;
            }
            else
            {
                hi = mid;
            }
        }
        return 0.5 * (lo + hi);
    }

    /// <summary>ln(e^a + e^b) (Opacus _log_add).</summary>
    public static double LogAdd(double logX, double logY)
    {
        double a = Math.Min(logX, logY), b = Math.Max(logX, logY);
        if (double.IsNegativeInfinity(a))
        {
            return b;
        }
        return LogOnePlus(Math.Exp(a - b)) + b;
    }

    /// <summary>ln(e^x - e^y) for x &gt;= y (Opacus _log_sub).</summary>
    public static double LogSub(double logX, double logY)
    {
        if (logX < logY)
        {
            throw new ArgumentException($"log-space subtraction would be negative: {logX} < {logY}", nameof(logX));
        }
        if (double.IsNegativeInfinity(logY))
        {
            return logX;
        }
        if (logX == logY)
        {
            return double.NegativeInfinity;
        }
        double d = logX - logY;
        // Python's expm1 overflows past ~709 and Opacus then returns logX; the same holds here.
        return d > 700 ? logX : Math.Log(ExpMinusOne(d)) + logY;
    }

    /// <summary>ln(1 + x) accurate for small x.</summary>
    public static double LogOnePlus(double x)
    {
        // Goldberg's trick: the rounding error of 1 + x cancels in log(u) * x / (u - 1).
        double u = 1.0 + x;
        return u == 1.0 ? x : Math.Log(u) * x / (u - 1.0);
    }

    /// <summary>e^x - 1 accurate for small x.</summary>
    public static double ExpMinusOne(double x)
    {
        // Kahan's trick: the rounding error of exp(x) cancels in (u - 1) * x / log(u).
        double u = Math.Exp(x);
        if (u == 1.0)
        {
            return x;
        }
        double um1 = u - 1.0;
        return um1 == -1.0 || double.IsInfinity(u) ? um1 : um1 * x / Math.Log(u);
    }

    // erfc(x0 + h) = erfc(x0) + sum_n h^n / n! * (-1)^n (2/sqrt(pi)) H_{n-1}(x0) exp(-x0^2), with the physicists'
    // Hermite polynomials (A&S 7.1.19); |h| <= 1/32 makes the terms fall by more than 8x each.
    private static double ErfcTaylor(double x)
    {
        int k = (int)Math.Round(x * NodesPerUnit);
        double x0 = (double)k / NodesPerUnit;
        double h = x - x0;
        (double sum, double density) = s_nodes[k - (int)(SeriesLimit * NodesPerUnit)];
        double hermitePrev = 0, hermite = 1; // H_{-1} (unused) and H_0
        double factor = 1; // (-h)^n / n!
        for (int n = 1; n < 40; n++)
        {
            factor *= -h / n;
            double term = factor * density * hermite;
            sum += term;
            if (Math.Abs(term) < 1e-18 * sum)
            {
                break;
            }
            // H_n = 2 x0 H_{n-1} - 2 (n-1) H_{n-2}.
            double next = 2 * x0 * hermite - 2 * (n - 1) * hermitePrev;
            hermitePrev = hermite;
            hermite = next;
        }
        return sum;
    }

    private static (double, double)[] BuildNodes()
    {
        int first = (int)(SeriesLimit * NodesPerUnit), last = (int)(TaylorLimit * NodesPerUnit);
        var nodes = new (double, double)[last - first + 1];
        for (int k = first; k <= last; k++)
        {
            double x0 = (double)k / NodesPerUnit;
            double gauss = Math.Exp(-x0 * x0);
            nodes[k - first] = (gauss / SqrtPi * ErfcContinuedFraction(x0), 2.0 / SqrtPi * gauss);
        }
        return nodes;
    }

    // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))  (A&S 7.1.6), all terms positive.
    private static double ErfSeries(double x)
    {
        double x2 = x * x;
        double term = x, sum = x;
        for (int n = 1; n < 200; n++)
        {
            term *= 2.0 * x2 / (2 * n + 1);
            sum += term;
            if (term < sum * 1e-17)
            {
                break;
            }
        }
        return 2.0 / SqrtPi * Math.Exp(-x2) * sum;
    }

    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))  (A&S 7.1.14),
    // evaluated with the modified Lentz algorithm; returns the continued fraction only.
    private static double ErfcContinuedFraction(double x)
    {
        const double tiny = 1e-300;
        double f = x, c = x, d = 0;
        for (int n = 1; n < 5000; n++)
        {
            double a = n * 0.5;
            d = x + a * d;
            d = Math.Abs(d) < tiny ? tiny : d;
            c = x + a / c;
            c = Math.Abs(c) < tiny ? tiny : c;
            d = 1.0 / d;
            double delta = c * d;
            f *= delta;
            if (Math.Abs(delta - 1.0) < 1e-16)
            {
                break;
            }
        }
        return 1.0 / f;
    }
}
