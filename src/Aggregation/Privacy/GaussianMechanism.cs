namespace Federated.Aggregation.Privacy;

/// <summary>Central DP for a trusted coordinator: adds N(0, (z C)^2) to each coordinate of the sum of clipped updates.</summary>
public static class GaussianMechanism
{
    /// <summary>Adds the noise in place; randomness from the given source (cryptographic by default).</summary>
    public static void AddNoise(Span<float> sum, double clipNorm, double noiseMultiplier, IRandomSource? random = null)
    {
        if (!(clipNorm > 0) || double.IsInfinity(clipNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(clipNorm), clipNorm, "clip norm must be a finite number > 0");
        }
        if (!(noiseMultiplier > 0) || double.IsInfinity(noiseMultiplier))
        {
            throw new ArgumentOutOfRangeException(nameof(noiseMultiplier), noiseMultiplier, "noise multiplier must be a finite number > 0");
        }
        var sampler = new NoiseSampler(random ?? CryptoRandomSource.Instance);
        double sigma = noiseMultiplier * clipNorm;
        for (int i = 0; i < sum.Length; i++)
        {
            sum[i] = (float)(sum[i] + sigma * sampler.Gaussian());
        }
    }
}
