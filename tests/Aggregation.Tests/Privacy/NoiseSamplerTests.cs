using System.Text;
using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class NoiseSamplerTests
{
    private static NoiseSampler Seeded(string name) =>
        new(new AesCtrRandomSource("tests/" + name, Encoding.UTF8.GetBytes("fixed seed for reproducible tests")));

    [Theory]
    [InlineData(0.3)]
    [InlineData(3.5)]
    [InlineData(20.0)]
    [InlineData(1e3)]
    [InlineData(1e7)]
    public void Poisson_Samples_HaveMeanAndVarianceMu(double mu)
    {
        var sampler = Seeded("poisson" + mu);
        const int n = 100_000;
        double sum = 0, sumSq = 0;
        for (int i = 0; i < n; i++)
        {
            double x = sampler.Poisson(mu);
            sum += x;
            sumSq += x * x;
        }
        double mean = sum / n, variance = sumSq / n - mean * mean;
        Assert.True(Math.Abs(mean - mu) <= 6 * Math.Sqrt(mu / n), $"mean {mean} vs {mu}");
        // Var of the sample variance ~ (2 mu^2 + mu) / n for a Poisson.
        Assert.True(Math.Abs(variance - mu) <= 6 * Math.Sqrt((2 * mu * mu + mu) / n), $"variance {variance} vs {mu}");
    }

    [Theory]
    [InlineData(3.5)]
    [InlineData(20.0)]
    public void Poisson_Histogram_MatchesPmf(double mu)
    {
        var sampler = Seeded("pmf" + mu);
        const int n = 200_000;
        var counts = new int[200];
        for (int i = 0; i < n; i++)
        {
            counts[sampler.Poisson(mu)]++;
        }
        for (int k = 0; k < 60; k++)
        {
            double p = Math.Exp(-mu + k * Math.Log(mu) - NoiseSampler.LogFactorial(k));
            double expected = n * p;
            Assert.True(Math.Abs(counts[k] - expected) <= 6 * Math.Sqrt(expected) + 2, $"k={k}: {counts[k]} vs {expected:F1}");
        }
    }

    [Theory]
    [InlineData(2.0)]
    [InlineData(5000.0)]
    public void Skellam_Samples_HaveMeanZeroAndVarianceTwoMu(double mu)
    {
        var sampler = Seeded("skellam" + mu);
        const int n = 100_000;
        double sum = 0, sumSq = 0;
        for (int i = 0; i < n; i++)
        {
            double x = sampler.Skellam(mu);
            sum += x;
            sumSq += x * x;
        }
        double mean = sum / n, variance = sumSq / n - mean * mean;
        double v = 2 * mu;
        Assert.True(Math.Abs(mean) <= 6 * Math.Sqrt(v / n), $"mean {mean}");
        Assert.True(Math.Abs(variance - v) <= 6 * v * Math.Sqrt(2.0 / n) + 6 * Math.Sqrt(v / n), $"variance {variance} vs {v}");
    }

    [Fact]
    public void LogFactorial_MatchesExactSumAcrossTableBoundary()
    {
        double exact = 0;
        for (int i = 2; i <= 300; i++)
        {
            exact += Math.Log(i);
            Assert.Equal(exact, NoiseSampler.LogFactorial(i), exact * 1e-14);
        }
    }

    [Theory]
    [InlineData(300.0, 280.0)]
    [InlineData(1e6, 1e6 + 1234)]
    public void LogPoissonPmf_StableForm_MatchesDirectFormula(double mean, double k)
    {
        double direct = -mean + k * Math.Log(mean) - NoiseSampler.LogFactorial(k);
        Assert.Equal(direct, NoiseSampler.LogPoissonPmf(k, mean, Math.Log(mean)), 1e-6);
    }

    [Fact]
    public void Poisson_HugeMean_StaysExactInMeanAndVariance()
    {
        var sampler = Seeded("huge");
        const int n = 20_000;
        double mu = 1e14, sum = 0, sumSq = 0;
        for (int i = 0; i < n; i++)
        {
            double x = sampler.Poisson(mu) - mu;
            sum += x;
            sumSq += x * x;
        }
        Assert.True(Math.Abs(sum / n) <= 6 * Math.Sqrt(mu / n));
        Assert.True(Math.Abs(sumSq / n - mu) <= 6 * mu * Math.Sqrt(2.0 / n));
    }

    [Fact]
    public void AesCtrRandomSource_SameSeed_SameStream_DifferentSeedOrLabel_Different()
    {
        byte[] seed = Encoding.UTF8.GetBytes("0123456789abcdef0123456789abcdef");
        byte[] a = new byte[1000], b = new byte[1000], c = new byte[1000], d = new byte[1000];
        using (var s = new AesCtrRandomSource("x", seed))
        {
            // Reading in odd-sized pieces gives the same stream as one read.
            s.Fill(a.AsSpan(0, 17));
            s.Fill(a.AsSpan(17));
        }
        using (var s = new AesCtrRandomSource("x", seed))
        {
            s.Fill(b);
        }
        seed[0] ^= 1;
        using (var s = new AesCtrRandomSource("x", seed))
        {
            s.Fill(c);
        }
        seed[0] ^= 1;
        using (var s = new AesCtrRandomSource("y", seed))
        {
            s.Fill(d);
        }
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.NotEqual(a, d);
        Assert.Throws<ArgumentOutOfRangeException>(() => new AesCtrRandomSource("x", new byte[8]));
    }
}
