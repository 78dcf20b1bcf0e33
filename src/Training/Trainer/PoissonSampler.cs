using Federated.Aggregation.Privacy;

namespace Federated.Training.Trainer;

/// <summary>
/// Poisson sampling of records for DP-SGD: each step, every record joins the batch independently with probability q,
/// so the batch size is Binomial(n, q) and no record's presence shows in a fixed batch size (Abadi et al. 2016, §3.1;
/// the sampling the subsampled-Gaussian RDP bound of Mironov, Talwar and Zhang 2019 assumes).
/// </summary>
public sealed class PoissonSampler
{
    private readonly int _recordCount;
    private readonly ulong _threshold;
    private readonly NoiseSampler _random;

    /// <summary>Samples indices 0..recordCount-1 at <paramref name="rate"/> from <paramref name="random"/>.</summary>
    public PoissonSampler(int recordCount, double rate, NoiseSampler random)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(recordCount);
        ArgumentNullException.ThrowIfNull(random);
        if (!(rate > 0 && rate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), rate, "the sampling rate must be in (0, 1]");
        }
        _recordCount = recordCount;
        _random = random;
        // A record is kept when a uniform 53-bit integer falls below ceil(q 2^53): probability exactly Rate, never below q.
        _threshold = RecordLevelPricing.InclusionThreshold(rate);
        Rate = RecordLevelPricing.InclusionRate(rate);
    }

    /// <summary>The exact inclusion probability (q rounded up to a multiple of 2^-53), the rate the accountant must charge.</summary>
    public double Rate { get; }

    /// <summary>The indices of one step's batch, in increasing order (possibly none).</summary>
    public int[] Next()
    {
        var kept = new List<int>((int)Math.Min(_recordCount, Rate * _recordCount * 2 + 16));
        for (int i = 0; i < _recordCount; i++)
        {
            if ((_random.NextUInt64() >> 11) < _threshold)
            {
                kept.Add(i);
            }
        }
        return [.. kept];
    }
}

/// <summary>Gaussian noise for DP-SGD drawn from a <see cref="NoiseSampler"/> (the cryptographic generator in production).</summary>
public static class GaussianNoise
{
    /// <summary>Fills <paramref name="destination"/> with independent N(0, sigma^2) draws.</summary>
    public static void Fill(Span<float> destination, double sigma, NoiseSampler random)
    {
        ArgumentNullException.ThrowIfNull(random);
        if (!(sigma >= 0) || !double.IsFinite(sigma))
        {
            throw new ArgumentOutOfRangeException(nameof(sigma), sigma, "sigma must be a finite number >= 0");
        }
        for (int i = 0; i < destination.Length; i += 2)
        {
            // Box and Muller 1958: sqrt(-2 ln u1) (cos 2 pi u2, sin 2 pi u2) are two independent standard normals;
            // u1 = 1 - U lies in (0, 1], so the logarithm is finite.
            double radius = Math.Sqrt(-2.0 * Math.Log(1.0 - random.NextDouble())) * sigma;
            double angle = 2.0 * Math.PI * random.NextDouble();
            destination[i] = (float)(radius * Math.Cos(angle));
            if (i + 1 < destination.Length)
            {
                destination[i + 1] = (float)(radius * Math.Sin(angle));
            }
        }
    }
}

/// <summary>
/// The record-level epsilon of DP-SGD after some steps: the Poisson-subsampled Gaussian RDP per step (Mironov, Talwar
/// and Zhang 2019, as Opacus computes it) times the steps, converted at delta over <see cref="RdpOrders.Default"/>.
/// Adjacency is add/remove of one record, with the record count (and so q) treated as public, as Abadi et al. and Opacus do.
/// </summary>
public sealed class RecordLevelAccountant
{
    private readonly double[] _perStep;
    private readonly double _delta;

    public RecordLevelAccountant(double samplingRate, double noiseMultiplier, double delta)
    {
        if (!(samplingRate > 0 && samplingRate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(samplingRate), samplingRate, "the sampling rate must be in (0, 1]");
        }
        if (!(noiseMultiplier > 0) || !double.IsFinite(noiseMultiplier))
        {
            throw new ArgumentOutOfRangeException(nameof(noiseMultiplier), noiseMultiplier, "the noise multiplier must be a positive finite number");
        }
        if (!(delta > 0 && delta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(delta), delta, "delta must be in (0, 1)");
        }
        SamplingRate = samplingRate;
        NoiseMultiplier = noiseMultiplier;
        _delta = delta;
        _perStep = RdpAnalysis.SubsampledGaussian(samplingRate, noiseMultiplier, RdpOrders.Default);
    }

    public double SamplingRate { get; }

    public double NoiseMultiplier { get; }

    /// <summary>Epsilon at the delta after <paramref name="steps"/> steps; RDP composes additively (Mironov 2017, Proposition 1).</summary>
    public double Epsilon(long steps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        var rdp = new double[_perStep.Length];
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] = steps == 0 ? 0 : _perStep[i] * steps;
        }
        return RdpAnalysis.Epsilon(RdpOrders.Default, rdp, _delta).Epsilon;
    }
}
