using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class RecordLevelPricingTests
{
    [Fact]
    public void Epsilon_TwoRoundsOfOpacusWorkedExample_ComposeToOpacusEpsilon()
    {
        // opacus/tests/accountants_test.py test_rdp_accountant: z 1.5, q 0.04, 2250 steps, delta 1e-5 -> 7.32911117143.
        // Here q = 1 expected record of 25 and the 2250 steps are two rounds of 1125 local steps each.
        var round = new RecordLevelRound(NoiseMultiplier: 1.5, MaxGradNorm: 1.0, ExpectedBatch: 1, Steps: 1125, Records: 25);

        PrivacySpent spent = RecordLevelPricing.Epsilon([round, round], 1e-5, RdpOrders.Opacus);

        Assert.True(Math.Abs(spent.Epsilon - 7.32911117143) <= 1e-6 * 7.33, $"epsilon {spent.Epsilon:R}");
    }

    [Fact]
    public void Epsilon_RoundsWithDifferentRates_EqualsTheAccountantComposingEachRate()
    {
        var small = new RecordLevelRound(1.1, 1.0, ExpectedBatch: 2, Steps: 3, Records: 12);
        var large = new RecordLevelRound(1.1, 1.0, ExpectedBatch: 2, Steps: 5, Records: 40);
        var accountant = new RdpAccountant();
        accountant.ComposeSubsampledGaussian(small.SamplingRate, 1.1, 3);
        accountant.ComposeSubsampledGaussian(large.SamplingRate, 1.1, 5);
        accountant.ComposeSubsampledGaussian(small.SamplingRate, 1.1, 3);

        double epsilon = RecordLevelPricing.Epsilon([small, large, small], 1e-5).Epsilon;

        Assert.Equal(accountant.GetEpsilon(1e-5).Epsilon, epsilon, 1e-12);
        // Composition only adds: the third round costs something.
        Assert.True(epsilon > RecordLevelPricing.Epsilon([small, large], 1e-5).Epsilon);
    }

    [Fact]
    public void Epsilon_NoRounds_IsZero() => Assert.Equal(0, RecordLevelPricing.Epsilon([], 1e-5).Epsilon);

    [Fact]
    public void SamplingRate_OneOfThree_IsNeverBelowTheQuotient()
    {
        double rate = RecordLevelPricing.SamplingRate(1, 3);

        Assert.True(rate >= 1.0 / 3);
        Assert.True(rate - 1.0 / 3 <= Math.Pow(2, -52));
        Assert.Equal(1.0, RecordLevelPricing.SamplingRate(7, 7));
    }

    [Theory]
    [InlineData(0.0, 1.0, 2, 1, 10, "noise multiplier")]
    [InlineData(double.NaN, 1.0, 2, 1, 10, "noise multiplier")]
    [InlineData(double.PositiveInfinity, 1.0, 2, 1, 10, "noise multiplier")]
    [InlineData(1.0, -1.0, 2, 1, 10, "clip norm")]
    [InlineData(1.0, double.PositiveInfinity, 2, 1, 10, "clip norm")]
    [InlineData(1.0, 1.0, 11, 1, 10, "expected batch of 11")]
    [InlineData(1.0, 1.0, 0, 1, 10, "expected batch of 0")]
    [InlineData(1.0, 1.0, 2, 0, 10, "local steps")]
    [InlineData(1.0, 1.0, 2, 1, 0, "no records")]
    public void Problem_UnpriceableRound_NamesTheParameter(double z, double c, int batch, int steps, int records, string expected)
    {
        var round = new RecordLevelRound(z, c, batch, steps, records);

        Assert.Contains(expected, round.Problem(), StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => RecordLevelPricing.RoundRdp(round, RdpOrders.Default));
    }

    [Fact]
    public void RoundRdp_StepsOfOneRound_IsStepsTimesTheSubsampledGaussian()
    {
        var round = new RecordLevelRound(0.9, 2.0, ExpectedBatch: 4, Steps: 7, Records: 48);
        double[] perStep = RdpAnalysis.SubsampledGaussian(round.SamplingRate, 0.9, RdpOrders.Default);

        double[] rdp = RecordLevelPricing.RoundRdp(round, RdpOrders.Default);

        Assert.Equal(perStep.Select(v => 7 * v), rdp);
    }
}
