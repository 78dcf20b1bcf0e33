using System.Text;
using Federated.Aggregation.Privacy;
using Federated.Training.Trainer;

namespace Federated.Training.Tests;

public sealed class PoissonSamplerTests
{
    internal static NoiseSampler Seeded(string name) =>
        new(new AesCtrRandomSource("training-tests/" + name, Encoding.UTF8.GetBytes("fixed seed for reproducible tests")));

    [Fact]
    public void Next_ManySteps_BatchSizeIsBinomialAndRecordsIndependent()
    {
        const int n = 1000, steps = 4000;
        const double q = 0.05;
        var sampler = new PoissonSampler(n, q, Seeded("poisson"));
        var sizes = new double[steps];
        var hits = new int[n];
        for (int s = 0; s < steps; s++)
        {
            int[] batch = sampler.Next();
            sizes[s] = batch.Length;
            Assert.Equal(batch.Order(), batch);
            Assert.Equal(batch.Length, batch.Distinct().Count());
            foreach (int i in batch)
            {
                hits[i]++;
            }
        }
        double mean = sizes.Average();
        double variance = sizes.Sum(x => (x - mean) * (x - mean)) / (steps - 1);
        // Binomial(n, q): mean q n = 50, variance q (1 - q) n = 47.5. Standard errors at 4000 steps: 0.109 for the
        // mean, 47.5 sqrt(2 / 3999) = 1.06 for the variance; the bounds are four of them.
        Assert.InRange(mean, 50 - 0.44, 50 + 0.44);
        Assert.InRange(variance, 47.5 - 4.3, 47.5 + 4.3);
        // Each record on its own: Binomial(4000, 0.05), mean 200, sd 13.8; none may stray five sd.
        Assert.All(hits, h => Assert.InRange(h, 200 - 69, 200 + 69));
        Assert.Equal(q, sampler.Rate, 15);
        Assert.True(sampler.Rate >= q);
    }

    [Fact]
    public void Rate_RoundsQUpToTheDrawsGrid()
    {
        var sampler = new PoissonSampler(3, 1.0 / 3, Seeded("rate"));
        Assert.True(sampler.Rate >= 1.0 / 3);
        Assert.True(sampler.Rate - 1.0 / 3 < Math.Pow(2, -52));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PoissonSampler(3, 0, Seeded("zero")));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PoissonSampler(3, 1.5, Seeded("big")));
        Assert.Equal([0, 1, 2], new PoissonSampler(3, 1.0, Seeded("one")).Next());
    }
}
