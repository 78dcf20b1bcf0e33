using System.Numerics;
using System.Text;
using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class DiscreteGaussianSamplerTests
{
    // Chi-square critical value: P(chi2_df > 70) < 1e-7 for every df <= 19 used here, so a correct sampler passes with
    // any seed but the odds; the seeds are fixed, so the outcome is reproducible, and each test checks the same
    // samples against a 10% wrong sigma^2 to show the statistic would catch one.
    private const double Critical = 70;

    private static AesCtrRandomSource Random(string name) => new("tests/dgauss/" + name, Encoding.UTF8.GetBytes("fixed seed for reproducible tests"));

    [Theory]
    [InlineData(3UL, 200_000)]
    [InlineData(10_000UL, 200_000)]
    public void Next_SmallAndMediumSigma_ChiSquareAgainstExactPmfPasses(ulong sigmaSquared, int samples)
    {
        using var random = Random("chi" + sigmaSquared);
        var sampler = new DiscreteGaussianSampler(sigmaSquared, random);
        long[] draws = new long[samples];
        sampler.Fill(draws);
        // Bin edges every ~sigma/2 out to about 3.5 sigma, with open tails (each tail bin still expects a dozen draws).
        double sigma = Math.Sqrt(sigmaSquared);
        long width = Math.Max(1, (long)Math.Round(sigma / 2));
        long[] edges = Enumerable.Range(-6, 14).Select(k => k * width).ToArray();

        double correct = ChiSquare(draws, edges, ExactBinProbabilities(sigmaSquared, edges));
        double wrong = ChiSquare(draws, edges, ExactBinProbabilities(sigmaSquared * 1.1, edges));

        Assert.True(correct < Critical, $"chi-square {correct:F1} >= {Critical} against the exact pmf of sigma^2 = {sigmaSquared}");
        Assert.True(wrong > Critical, $"chi-square {wrong:F1} against a 10% wrong sigma^2 does not reject");
    }

    [Fact]
    public void Next_LargeSigma_ChiSquareAgainstNormalBinsPasses()
    {
        // sigma = 2^25: bins of sigma/2 hold ~10^7 integers each, where the discrete and continuous Gaussians agree to
        // ~exp(-2 pi^2 sigma^2) (Poisson summation), so the normal CDF gives the exact bin masses to double precision.
        const ulong sigmaSquared = 1UL << 50;
        using var random = Random("large");
        var sampler = new DiscreteGaussianSampler(sigmaSquared, random);
        long[] draws = new long[100_000];
        sampler.Fill(draws);
        double sigma = Math.Sqrt(sigmaSquared);
        long[] edges = Enumerable.Range(-7, 15).Select(k => (long)(k * sigma / 2)).ToArray();

        double correct = ChiSquare(draws, edges, NormalBinProbabilities(sigma, edges));
        double wrong = ChiSquare(draws, edges, NormalBinProbabilities(sigma * Math.Sqrt(1.1), edges));

        Assert.True(correct < Critical, $"chi-square {correct:F1}");
        Assert.True(wrong > Critical, $"chi-square {wrong:F1} against a 10% wrong sigma^2 does not reject");
    }

    [Fact]
    public void BernoulliExp_UInt128AndBigInteger_DrawExpOfMinusGammaExactly()
    {
        // gamma = 7/4 crosses the whole-unit loop once and leaves a fraction, exercising both halves of Algorithm 1.
        using var random = Random("bern");
        var sampler = new DiscreteGaussianSampler(1, random);
        const int n = 200_000;
        int small = 0, big = 0;
        for (int i = 0; i < n; i++)
        {
            small += sampler.BernoulliExp((UInt128)7, (UInt128)4) ? 1 : 0;
            big += sampler.BernoulliExp(new BigInteger(7) << 200, new BigInteger(4) << 200) ? 1 : 0;
        }
        double p = Math.Exp(-1.75), sd = Math.Sqrt(p * (1 - p) / n);
        Assert.InRange(small / (double)n, p - 6 * sd, p + 6 * sd);
        Assert.InRange(big / (double)n, p - 6 * sd, p + 6 * sd);
    }

    [Fact]
    public void Next_SameSeed_SameDraws()
    {
        using var a = Random("same");
        using var b = Random("same");
        long[] x = new long[64], y = new long[64];
        new DiscreteGaussianSampler(1000, a).Fill(x);
        new DiscreteGaussianSampler(1000, b).Fill(y);
        Assert.Equal(x, y);
        Assert.Contains(x, v => v != 0);
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData((1UL << 62) + 1)]
    public void Constructor_SigmaSquaredOutOfRange_Throws(ulong sigmaSquared)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new DiscreteGaussianSampler(sigmaSquared));
        Assert.Equal("sigmaSquared", ex.ParamName);
    }

    [Theory]
    [InlineData(0UL, 0UL)]
    [InlineData(15UL, 3UL)]
    [InlineData(16UL, 4UL)]
    [InlineData(ulong.MaxValue, 4294967295UL)]
    [InlineData(1UL << 62, 1UL << 31)]
    public void FloorSqrt_Values_AreExact(ulong value, ulong root)
    {
        Assert.Equal(root, DiscreteGaussianSampler.FloorSqrt(value));
    }

    // P(bin) for bins (-inf, e0), [e0, e1), ..., [e_last, inf) from the exact pmf exp(-x^2 / (2 sigma^2)) / Z.
    private static double[] ExactBinProbabilities(double sigmaSquared, long[] edges)
    {
        long reach = (long)Math.Ceiling(40 * Math.Sqrt(sigmaSquared)) + 10;
        var bins = new double[edges.Length + 1];
        double total = 0;
        for (long x = -reach; x <= reach; x++)
        {
            double w = Math.Exp(-(double)x * x / (2 * sigmaSquared));
            bins[BinOf(x, edges)] += w;
            total += w;
        }
        return bins.Select(b => b / total).ToArray();
    }

    private static double[] NormalBinProbabilities(double sigma, long[] edges)
    {
        var cdf = edges.Select(e => PrivacyMath.NormalCdf((e - 0.5) / sigma)).Prepend(0.0).Append(1.0).ToArray();
        return Enumerable.Range(0, edges.Length + 1).Select(i => cdf[i + 1] - cdf[i]).ToArray();
    }

    private static int BinOf(long x, long[] edges)
    {
        int bin = 0;
        while (bin < edges.Length && x >= edges[bin])
        {
            bin++;
        }
        return bin;
    }

    private static double ChiSquare(long[] draws, long[] edges, double[] probabilities)
    {
        var counts = new long[edges.Length + 1];
        foreach (long x in draws)
        {
            counts[BinOf(x, edges)]++;
        }
        double statistic = 0;
        for (int i = 0; i < counts.Length; i++)
        {
            double expected = probabilities[i] * draws.Length;
            Assert.True(expected >= 5, $"bin {i} expects only {expected:F2} draws");
            statistic += (counts[i] - expected) * (counts[i] - expected) / expected;
        }
        return statistic;
    }
}
