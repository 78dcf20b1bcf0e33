using Federated.Aggregation.Privacy;
using Federated.Training.Trainer;

namespace Federated.Training.Tests;

public sealed class RecordLevelAccountantTests
{
    [Theory]
    // pytorch/opacus opacus/tests/accountants_test.py (commit 030b723f), test_rdp_accountant: q 0.04, z 1.5,
    // 2250 steps, delta 1e-5 -> 7.32911117143 (the optimum, order 3.9, lies inside the project's orders too).
    [InlineData(0.04, 1.5, 2250, 1e-5, 7.32911117143)]
    // The rest from an independent pure-Python port of Opacus rdp.py (commit 1235e1e1) over RdpOrders.Default,
    // which reproduces the value above to 13 digits: optimum orders 3.7, 9.6, 6.1.
    [InlineData(0.25, 1.0, 5, 1e-5, 5.265901286575931)]
    [InlineData(0.01, 1.1, 1000, 1e-5, 1.7117700912207567)]
    [InlineData(0.5, 2.0, 3, 1e-3, 1.661845416141143)]
    public void Epsilon_KnownRuns_MatchesOpacus(double q, double z, long steps, double delta, double expected)
    {
        var accountant = new RecordLevelAccountant(q, z, delta);

        double epsilon = accountant.Epsilon(steps);

        Assert.True(Math.Abs(epsilon - expected) <= 1e-9 * expected, $"epsilon {epsilon:R}, expected {expected:R}");
        var reference = new RdpAccountant(RdpOrders.Default);
        reference.ComposeSubsampledGaussian(q, z, steps);
        Assert.Equal(reference.GetEpsilon(delta).Epsilon, epsilon);
    }

    [Fact]
    public void Epsilon_GrowsWithSteps_ZeroBeforeTheFirst()
    {
        var accountant = new RecordLevelAccountant(0.1, 1.0, 1e-5);
        Assert.Equal(0.0, accountant.Epsilon(0));
        double previous = 0;
        for (int steps = 1; steps <= 20; steps++)
        {
            double epsilon = accountant.Epsilon(steps);
            Assert.True(epsilon > previous);
            previous = epsilon;
        }
    }

    [Theory]
    [InlineData(0.0, 1.0, 1e-5)]
    [InlineData(0.1, 0.0, 1e-5)]
    [InlineData(0.1, double.NaN, 1e-5)]
    [InlineData(0.1, 1.0, 1.0)]
    [InlineData(0.1, 1.0, 0.0)]
    public void Constructor_OutOfRange_Throws(double q, double z, double delta) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new RecordLevelAccountant(q, z, delta));
}
