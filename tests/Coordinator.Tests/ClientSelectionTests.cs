using Federated.Coordinator.Rounds;

namespace Federated.Coordinator.Tests;

public sealed class ClientSelectionTests
{
    [Fact]
    public void PoissonSample_RateOne_KeepsEveryone()
    {
        string[] pool = [.. Enumerable.Range(0, 50).Select(i => $"client-{i}")];

        Assert.Equal(pool, ClientSelection.PoissonSample(pool, 1.0));
    }

    [Fact]
    public void PoissonSample_RateThreeTenths_SizeIsBinomialAndEveryMemberIsDrawn()
    {
        const int members = 20_000;
        const double rate = 0.3;
        string[] pool = [.. Enumerable.Range(0, members).Select(i => $"client-{i}")];

        IReadOnlyList<string> first = ClientSelection.PoissonSample(pool, rate);
        IReadOnlyList<string> second = ClientSelection.PoissonSample(pool, rate);

        // Binomial(20000, 0.3): mean 6000, standard deviation 64.8; 6 sigma makes a false failure ~1e-9.
        double sigma = Math.Sqrt(members * rate * (1 - rate));
        Assert.InRange(first.Count, members * rate - 6 * sigma, members * rate + 6 * sigma);
        // Independent draws: the overlap of two samples is Binomial(20000, 0.09) (mean 1800, sigma 40.5), not the whole sample.
        int overlap = first.Intersect(second).Count();
        double overlapSigma = Math.Sqrt(members * rate * rate * (1 - rate * rate));
        Assert.InRange(overlap, members * rate * rate - 6 * overlapSigma, members * rate * rate + 6 * overlapSigma);
        Assert.All(first, c => Assert.StartsWith("client-", c, StringComparison.Ordinal));
        Assert.Equal(first.Count, first.Distinct().Count());
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    [InlineData(double.NaN)]
    public void PoissonSample_RateOutsideZeroOne_Throws(double rate) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => ClientSelection.PoissonSample(["a"], rate));
}
