namespace Federated.Aggregation.Privacy;

/// <summary>
/// Privacy loss distribution accountant for the Poisson-subsampled Gaussian mechanism under add-or-remove
/// adjacency, as in Google's dp_accounting PLDAccountant: pessimistic connect-the-dots discretization, FFT
/// self-composition with tail truncation, and the worse of the remove and add directions.
/// </summary>
public sealed class PldAccountant
{
    /// <summary>dp_accounting's default value_discretization_interval.</summary>
    public const double DefaultDiscretization = 1e-4;

    // dp_accounting's default log_mass_truncation_bound for the Gaussian privacy loss.
    private const double LogMassTruncationBound = -50;

    private const double TailMassTruncation = 1e-15;

    private readonly double _discretization;
    private PrivacyLossPmf? _remove;
    private PrivacyLossPmf? _add;

    /// <summary>Creates an empty accountant with the given loss discretization interval.</summary>
    public PldAccountant(double discretization = DefaultDiscretization)
    {
        if (!(discretization > 0 && discretization <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(discretization), discretization, "discretization must be in (0, 1]");
        }
        _discretization = discretization;
    }

    /// <summary>Adds <paramref name="steps"/> rounds of the Poisson-subsampled Gaussian with sensitivity 1.</summary>
    public void ComposeSubsampledGaussian(double samplingRate, double noiseMultiplier, long steps = 1)
    {
        if (!(samplingRate > 0 && samplingRate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(samplingRate), samplingRate, "sampling rate must be in (0, 1]");
        }
        if (!(noiseMultiplier > 0) || double.IsInfinity(noiseMultiplier))
        {
            throw new ArgumentOutOfRangeException(nameof(noiseMultiplier), noiseMultiplier, "noise multiplier must be a finite number > 0");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        PrivacyLossPmf remove = SubsampledGaussianPmf(samplingRate, noiseMultiplier, removeAdjacency: true, _discretization).SelfCompose(steps, TailMassTruncation);
        PrivacyLossPmf add = SubsampledGaussianPmf(samplingRate, noiseMultiplier, removeAdjacency: false, _discretization).SelfCompose(steps, TailMassTruncation);
        _remove = _remove is null ? remove : Convolve(_remove, remove);
        _add = _add is null ? add : Convolve(_add, add);
    }

    /// <summary>Smallest epsilon for which both adjacency directions are (epsilon, delta)-DP.</summary>
    public PrivacySpent GetEpsilon(double delta)
    {
        if (!(delta > 0 && delta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(delta), delta, "delta must be in (0, 1)");
        }
        if (_remove is null || _add is null)
        {
            return new PrivacySpent(0, delta, null);
        }
        double eps = Math.Max(_remove.GetEpsilonForDelta(delta), _add.GetEpsilonForDelta(delta));
        return new PrivacySpent(eps, delta, null);
    }

    /// <summary>The delta at the given epsilon (the worse adjacency direction).</summary>
    public double GetDelta(double epsilon)
    {
        if (_remove is null || _add is null)
        {
            return 0;
        }
        return Math.Max(_remove.GetDeltaForEpsilon(epsilon), _add.GetDeltaForEpsilon(epsilon));
    }

    /// <summary>Epsilon after <paramref name="rounds"/> rounds of the subsampled Gaussian.</summary>
    public static PrivacySpent Epsilon(double samplingRate, double noiseMultiplier, long rounds, double delta, double discretization = DefaultDiscretization)
    {
        var accountant = new PldAccountant(discretization);
        accountant.ComposeSubsampledGaussian(samplingRate, noiseMultiplier, rounds);
        return accountant.GetEpsilon(delta);
    }

    // Hockey-stick divergence of the subsampled Gaussian (sensitivity 1, noise sigma), dp_accounting
    // privacy_loss_mechanism.GaussianPrivacyLoss with sampling_prob. REMOVE: mu_upper = (1-q) N(0, s^2) + q N(-1, s^2),
    // mu_lower = N(0, s^2). ADD: mu_upper = N(0, s^2), mu_lower = (1-q) N(0, s^2) + q N(1, s^2). The loss is monotone
    // in x, so delta(eps) = mu_upper(x < x*) - e^eps mu_lower(x < x*) at the crossing point x*.
    internal static double HockeyStick(double q, double sigma, bool removeAdjacency, double epsilon)
    {
        double s2 = sigma * sigma;
        if (removeAdjacency)
        {
            if (q < 1 && epsilon <= Math.Log(1 - q))
            {
                return -PrivacyMath.ExpMinusOne(epsilon);
            }
            // (1 - q) + q exp(-(2x + 1) / (2 s^2)) = e^eps.
            double a = PrivacyMath.ExpMinusOne(epsilon) + q; // e^eps - 1 + q > 0
            double xStar = -s2 * Math.Log(a / q) - 0.5;
            return q * PrivacyMath.NormalCdf((xStar + 1) / sigma) - a * PrivacyMath.NormalCdf(xStar / sigma);
        }
        if (q < 1 && epsilon >= -Math.Log(1 - q))
        {
            return 0;
        }
        // (1 - q) + q exp((2x - 1) / (2 s^2)) = e^-eps.
        double b = PrivacyMath.ExpMinusOne(-epsilon) + q; // e^-eps - 1 + q > 0
        double x = s2 * Math.Log(b / q) + 0.5;
        double expEps = Math.Exp(epsilon);
        return (1 - expEps * (1 - q)) * PrivacyMath.NormalCdf(x / sigma) - expEps * q * PrivacyMath.NormalCdf((x - 1) / sigma);
    }

    // Privacy loss at x for each direction (log of mu_upper / mu_lower).
    private static double PrivacyLoss(double q, double sigma, bool removeAdjacency, double x)
    {
        double s2 = sigma * sigma;
        double t = removeAdjacency ? -(2 * x + 1) / (2 * s2) : (2 * x - 1) / (2 * s2);
        double mix = q == 1 ? t : PrivacyMath.LogAdd(Math.Log(1 - q), Math.Log(q) + t);
        return removeAdjacency ? mix : -mix;
    }

    internal static PrivacyLossPmf SubsampledGaussianPmf(double q, double sigma, bool removeAdjacency, double discretization)
    {
        // connect_dots_bounds: the losses at the points where each tail of the noise holds 0.5 * exp(-50).
        double xb = sigma * PrivacyMath.NormalQuantileFromLog(Math.Log(0.5) + LogMassTruncationBound);
        double lowerX = removeAdjacency ? xb - 1 : xb;
        double upperX = removeAdjacency ? -xb : -xb + 1;
        double epsilonUpper = PrivacyLoss(q, sigma, removeAdjacency, lowerX);
        double epsilonLower = PrivacyLoss(q, sigma, removeAdjacency, upperX);
        long roundedUpper = (long)Math.Ceiling(epsilonUpper / discretization);
        long roundedLower = (long)Math.Floor(epsilonLower / discretization);
        return PrivacyLossPmf.ConnectTheDots(discretization, roundedLower, roundedUpper,
            eps => HockeyStick(q, sigma, removeAdjacency, eps));
    }

    // Composition of two different PMFs by one FFT convolution (pld_pmf.py DensePLDPmf.compose, no truncation).
    private static PrivacyLossPmf Convolve(PrivacyLossPmf a, PrivacyLossPmf b)
    {
        int length = a.Probs.Length + b.Probs.Length - 1;
        int size = Fft.NextPowerOfTwo(length);
        var ar = new double[size];
        var ai = new double[size];
        var br = new double[size];
        var bi = new double[size];
        Array.Copy(a.Probs, ar, a.Probs.Length);
        Array.Copy(b.Probs, br, b.Probs.Length);
        Fft.Transform(ar, ai, inverse: false);
        Fft.Transform(br, bi, inverse: false);
        for (int k = 0; k < size; k++)
        {
            (ar[k], ai[k]) = (ar[k] * br[k] - ai[k] * bi[k], ar[k] * bi[k] + ai[k] * br[k]);
        }
        Fft.Transform(ar, ai, inverse: true);
        var probs = new double[length];
        Array.Copy(ar, probs, length);
        double infinity = a.InfinityMass + b.InfinityMass - a.InfinityMass * b.InfinityMass;
        return new PrivacyLossPmf(a.Discretization, a.LowerLoss + b.LowerLoss, probs, infinity);
    }
}
