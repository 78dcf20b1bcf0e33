using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class PrivacyPlannerTests
{
    // pytorch/opacus opacus/tests/accountants_test.py (commit 030b723f): test_get_noise_multiplier_rdp_epochs
    // (lines 50-64, q 0.04, epsilon 8, delta 1e-5, 90 epochs = 2250 steps -> 1.416) and
    // test_get_noise_multiplier_rdp_steps (lines 66-79, 2000 steps -> 1.3562), both to 4 places. Opacus stops
    // its search once epsilon is within 0.01 below the target, so its answer sits slightly above the exact one;
    // this planner's longer order list can only need less noise.
    [Theory]
    [InlineData(2250L, 1.416)]
    [InlineData(2000L, 1.3562)]
    public void NoiseForEpsilon_OpacusCases_AtMostOpacusAndClose(long steps, double opacus)
    {
        double z = PrivacyPlanner.NoiseForEpsilon(PrivacyAccountantKind.Rdp, 8.0, 1e-5, 0.04, steps);
        Assert.True(z <= opacus + 5e-5, $"z {z} above Opacus's {opacus}");
        Assert.True(z >= opacus - 0.01, $"z {z} implausibly far below Opacus's {opacus}");
        // Opacus's own answer gives epsilon in (7.99, 8] under Opacus's orders.
        var accountant = new RdpAccountant(RdpOrders.Opacus);
        accountant.ComposeSubsampledGaussian(0.04, opacus, steps);
        Assert.InRange(accountant.GetEpsilon(1e-5).Epsilon, 7.99 - 1e-3, 8.0 + 1e-3);
    }

    [Theory]
    [InlineData(PrivacyAccountantKind.Rdp, 1.0, 1e-5, 0.01, 1000L)]
    [InlineData(PrivacyAccountantKind.Rdp, 8.0, 1e-6, 0.1, 100L)]
    [InlineData(PrivacyAccountantKind.Pld, 1.0, 1e-5, 0.1, 20L)]
    public void NoiseForEpsilon_Result_MeetsTargetAndIsMinimalToRelative1e4(PrivacyAccountantKind kind, double target, double delta, double q, long rounds)
    {
        double z = PrivacyPlanner.NoiseForEpsilon(kind, target, delta, q, rounds);
        Assert.True(PrivacyPlanner.Epsilon(kind, z, q, rounds, delta).Epsilon <= target);
        Assert.True(PrivacyPlanner.Epsilon(kind, z * (1 - 1e-4), q, rounds, delta).Epsilon > target);
    }

    [Fact]
    public void NoiseForEpsilon_Pld_NeedsNoMoreNoiseThanRdp()
    {
        double rdp = PrivacyPlanner.NoiseForEpsilon(PrivacyAccountantKind.Rdp, 1.0, 1e-5, 0.1, 20);
        double pld = PrivacyPlanner.NoiseForEpsilon(PrivacyAccountantKind.Pld, 1.0, 1e-5, 0.1, 20);
        Assert.True(pld <= rdp);
    }

    [Theory]
    [InlineData(PrivacyAccountantKind.Rdp, 1.1, 3.0, 1e-5, 0.01)]
    [InlineData(PrivacyAccountantKind.Pld, 2.0, 2.0, 1e-5, 0.2)]
    public void MaxRounds_Result_IsLastAffordableRound(PrivacyAccountantKind kind, double z, double target, double delta, double q)
    {
        long t = PrivacyPlanner.MaxRounds(kind, z, target, delta, q);
        Assert.True(t >= 1);
        Assert.True(PrivacyPlanner.Epsilon(kind, z, q, t, delta).Epsilon <= target);
        Assert.True(PrivacyPlanner.Epsilon(kind, z, q, t + 1, delta).Epsilon > target);
    }

    [Fact]
    public void MaxRounds_TargetBelowOneRound_IsZero()
    {
        Assert.Equal(0, PrivacyPlanner.MaxRounds(PrivacyAccountantKind.Rdp, 0.5, 0.01, 1e-5, 1.0));
    }

    [Fact]
    public void Epsilon_BadArguments_ThrowNamingTheRange()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => PrivacyPlanner.Epsilon(PrivacyAccountantKind.Rdp, 1, 1.5, 10, 1e-5));
        Assert.Contains("(0, 1]", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => PrivacyPlanner.Epsilon(PrivacyAccountantKind.Rdp, 0, 0.5, 10, 1e-5));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrivacyPlanner.Epsilon(PrivacyAccountantKind.Rdp, 1, 0.5, 0, 1e-5));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrivacyPlanner.Epsilon(PrivacyAccountantKind.Rdp, 1, 0.5, 10, 1.0));
    }
}
