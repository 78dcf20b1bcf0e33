using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class PrivacyPlanTests
{
    private static PrivacyPlanParameters Distributed(int d, int n, int t, double z, long rounds, double delta) =>
        new(PrivacyMechanism.DistributedSkellam, d, n, t, Bits: 32, ClipNorm: 1.0, NoiseMultiplier: z, Rounds: rounds, Delta: delta);

    // The central plan of the review: 50 rounds, z = 1, Poisson rate 0.05, delta 1e-5, whose subsampled-Gaussian
    // price was 3.18. Dimension, clients and threshold do not enter the discrete Gaussian's price.
    private static readonly PrivacyPlanParameters s_poissonCentral =
        new(PrivacyMechanism.CentralGaussian, 4096, 20, 2, 32, 1.0, 1.0, 50, 1e-5, SamplingRate: 0.05);

    // Worked values from an independent Python re-implementation (standard library only) of the DSkellam calibration
    // (TFF's sub-Gaussian scale, the 1e14 Poisson-mean cap, the Kairouz-Liu-Steinke rounded-norm bound floored to an
    // integer), Agarwal-Kairouz-Liu Thm 3.5 at ceil(order) with replace-one sensitivities 2 Delta1, 2 Delta2 and the
    // threshold's variance, composed over the rounds, and the Balle et al. conversion over RdpOrders.Default.
    [Theory]
    [InlineData(65536, 10, 7, 1.0, 100L, 1e-6, 37416573.36750434, 19157285820.275192, 74833147.73544997, 1399999999998920.2, 412.42921619684455)]
    [InlineData(1 << 20, 100, 67, 0.8, 50L, 1e-5, 144697960.78386348, 296341424711.2112, 289395922.56954217, 1.3399999999980236e16, 322.62663110385023)]
    [InlineData(4096, 3, 2, 0.5, 5L, 1e-6, 39999999.4999638, 5119999999.997054, 79999999.99995397, 399999999999539.7, 92.42921619684452)]
    public void Create_DistributedSkellamPlans_MatchWorkedValuesAtIntegerOrders(
        int d, int n, int t, double z, long rounds, double delta, double scale, double l1, double l2, double variance, double epsilon)
    {
        PrivacyPlan plan = PrivacyPlan.Create(Distributed(d, n, t, z, rounds, delta));

        Assert.Equal("distributed_skellam", plan.MechanismName);
        Assert.Equal("client", plan.PrivacyUnit);
        Assert.Equal("replace-one", plan.AdjacencyName);
        Assert.Equal(scale, plan.Scale, scale * 1e-9);
        Assert.Equal(l1, plan.L1Sensitivity, l1 * 1e-9);
        Assert.Equal(l2, plan.L2Sensitivity, l2 * 1e-9);
        Assert.Equal(variance, plan.NoiseVariance, variance * 1e-9);
        Assert.Equal(epsilon, plan.Epsilon.Epsilon, epsilon * 1e-9);
        Assert.Equal(Math.Ceiling(plan.Epsilon.Order!.Value), plan.Epsilon.Order!.Value);
        // Anyone holding the four printed numbers gets the same epsilon from the paper's formula.
        double[] recomputed = RdpAnalysis.Skellam(plan.L1Sensitivity, plan.L2Sensitivity, plan.NoiseVariance, RdpOrders.Default)
            .Select(r => r * rounds).ToArray();
        Assert.Equal(plan.Epsilon.Epsilon, RdpAnalysis.Epsilon(RdpOrders.Default, recomputed, delta).Epsilon, 12);
    }

    [Fact]
    public void Create_DistributedReplaceOne_DoublesZeroOutSensitivitiesWithTheSameNoise()
    {
        PrivacyPlanParameters p = Distributed(65536, 10, 7, 1.0, 100, 1e-6);
        PrivacyPlan replace = PrivacyPlan.Create(p);
        PrivacyPlan zeroOut = PrivacyPlan.Create(p with { Adjacency = Adjacency.ZeroOut });

        Assert.Equal(2 * zeroOut.L2Sensitivity, replace.L2Sensitivity);
        Assert.Equal(2 * zeroOut.L1Sensitivity, replace.L1Sensitivity);
        Assert.Equal(zeroOut.NoiseVariance, replace.NoiseVariance);
        Assert.Equal(replace.Quantizer.LocalSkellamMu, zeroOut.Quantizer.LocalSkellamMu);
        // The noise the t honest encoders add is exactly the variance priced.
        Assert.Equal(2 * replace.Quantizer.LocalSkellamMu * 7, replace.NoiseVariance);
        Assert.True(replace.Epsilon.Epsilon > 3 * zeroOut.Epsilon.Epsilon);
    }

    [Fact]
    public void OwnShareRoundRdp_Distributed_PricesOneShareWithTheSameSensitivities()
    {
        PrivacyPlan plan = PrivacyPlan.Create(Distributed(65536, 10, 7, 1.0, 100, 1e-6));

        double[] own = plan.OwnShareRoundRdp()!;

        double[] expected = RdpAnalysis.Skellam(plan.L1Sensitivity, plan.L2Sensitivity, 2 * plan.Quantizer.LocalSkellamMu, plan.Orders);
        Assert.Equal(expected, own);
        Assert.Equal(plan.NoiseVariance / 7, 2 * plan.Quantizer.LocalSkellamMu, plan.NoiseVariance * 1e-15);
        // One share carries a seventh of the threshold's variance: the Gaussian part is seven times larger.
        Assert.InRange(own[^1] / plan.RoundRdp[^1], 6.99, 7.01);
        Assert.Null(PrivacyPlan.Create(s_poissonCentral).OwnShareRoundRdp());
    }

    [Fact]
    public void Create_PoissonCentralPublicSample_PricedWithoutAmplification()
    {
        // Before: the subsampled Gaussian at q = 0.05 (Mironov-Talwar-Zhang, as RunOrchestrator priced it).
        var before = new RdpAccountant();
        before.ComposeSubsampledGaussian(0.05, 1.0, 50);
        Assert.Equal(3.176403148636823, before.GetEpsilon(1e-5).Epsilon, 1e-9);

        // The same unit (zero-out or add-remove, sensitivity Delta) without amplification: 57.30, as q = 1.
        Assert.Equal(57.30169282486775, PrivacyPlan.Create(s_poissonCentral with { Adjacency = Adjacency.ZeroOut }).Epsilon.Epsilon, 1e-9);
        PrivacyPlan addRemove = PrivacyPlan.Create(s_poissonCentral with { Adjacency = Adjacency.AddRemove });
        Assert.False(addRemove.Amplified);
        Assert.Equal(1.0, addRemove.PricedSamplingRate);
        Assert.Equal(57.30169282486775, addRemove.Epsilon.Epsilon, 1e-9);

        // The product's unit, replace-one (sensitivity 2 Delta): 166.04 (Python: min over orders of 100 a + conversion).
        PrivacyPlan product = PrivacyPlan.Create(s_poissonCentral);
        Assert.Equal("central_gaussian", product.MechanismName);
        Assert.Equal("replace-one", product.AdjacencyName);
        Assert.Equal(166.03553359954904, product.Epsilon.Epsilon, 1e-9);
        Assert.Equal(1.3, product.Epsilon.Order!.Value, 12);
    }

    [Fact]
    public void Create_PoissonCentralSecretSampleAddRemove_AmplifiesByZhuWangAboveTheTightGaussianBound()
    {
        PrivacyPlan secret = PrivacyPlan.Create(s_poissonCentral with { Adjacency = Adjacency.AddRemove, SampleIsSecret = true });

        Assert.True(secret.Amplified);
        Assert.Equal(0.05, secret.PricedSamplingRate);
        // Python, log-space Zhu-Wang Thm 6 with eps(l) = l / 2 at ceil(order), 50 rounds, delta 1e-5: 4.0427 at order 4.
        Assert.Equal(4.042746980669004, secret.Epsilon.Epsilon, 1e-9);
        Assert.Equal(4.0, secret.Epsilon.Order);
        // The general bound is never below the continuous Gaussian's tight one, nor above the unamplified price.
        Assert.True(secret.Epsilon.Epsilon >= 3.176403148636823);
        Assert.True(secret.Epsilon.Epsilon < 57.30169282486775);
        // A secret sample does not amplify replace-one (no Poisson bound for it here): priced at q = 1.
        Assert.False(PrivacyPlan.Create(s_poissonCentral with { SampleIsSecret = true }).Amplified);
    }

    [Fact]
    public void Create_Central_RdpIsTheDiscreteGaussianOfItsOwnSigma()
    {
        PrivacyPlan plan = PrivacyPlan.Create(s_poissonCentral);
        CentralGaussianPlan central = plan.Central!;

        Assert.Equal(central.SigmaSquared, plan.NoiseVariance);
        double l2Squared = plan.L2Sensitivity * plan.L2Sensitivity;
        Assert.Equal(4 * plan.Quantizer.NormBoundSquared, l2Squared, l2Squared * 1e-12);
        for (int i = 0; i < plan.Orders.Count; i++)
        {
            double a = plan.Orders[i];
            Assert.Equal(a * 4 * plan.Quantizer.NormBoundSquared / (2.0 * central.SigmaSquared), plan.RoundRdp[i], 1e-12);
        }
        // sigma^2 = ceil(z^2 B): at z = 1 exactly B, so the price is 2 a (replace-one) per round.
        Assert.Equal((ulong)plan.Quantizer.NormBoundSquared, central.SigmaSquared);
    }

    public static TheoryData<PrivacyPlanParameters, string, string> BadPlans()
    {
        PrivacyPlanParameters ok = Distributed(4096, 10, 7, 1.0, 10, 1e-6);
        return new()
        {
            { ok with { Dimension = 0 }, "dimension", "1..2^28" },
            { ok with { Threshold = 11 }, "threshold", "1..clients (10)" },
            { ok with { Clients = 0 }, "clients", "1..1000000" },
            { ok with { Bits = 15 }, "bits", "16..32" },
            { ok with { Dimension = 1 << 22, Clients = 1000, Bits = 16 }, "bits", "cannot hold" },
            { ok with { Mechanism = PrivacyMechanism.CentralGaussian, Dimension = 1 << 22, Clients = 1000, Bits = 16 }, "bits", "use bits >= " },
            { ok with { Delta = 0 }, "delta", "(0, 1)" },
            { ok with { Delta = 1 }, "delta", "(0, 1)" },
            { ok with { Delta = double.NaN }, "delta", "(0, 1)" },
            { ok with { ClipNorm = double.PositiveInfinity }, "clip_norm", "finite" },
            { ok with { ClipNorm = double.NaN }, "clip_norm", "finite" },
            { ok with { NoiseMultiplier = double.NaN }, "noise_multiplier", "(0, 10000]" },
            { ok with { NoiseMultiplier = 0 }, "noise_multiplier", "(0, 10000]" },
            { ok with { Rounds = 0 }, "rounds", "1..10000000" },
            { ok with { SamplingRate = 1.5 }, "sampling_rate", "(0, 1]" },
            { ok with { SampleIsSecret = true }, "sample_is_secret", "(0, 1)" },
            { ok with { Adjacency = Adjacency.AddRemove }, "adjacency", "replace-one or zero-out" },
            { ok with { Mechanism = (PrivacyMechanism)7 }, "mechanism", "distributed or central" },
        };
    }

    [Theory]
    [MemberData(nameof(BadPlans))]
    public void Create_BadPlan_RefusedNamingFieldValueAndRange(PrivacyPlanParameters parameters, string field, string range)
    {
        var ex = Assert.Throws<PrivacyPlanException>(() => PrivacyPlan.Create(parameters));

        Assert.Equal(field, ex.Field);
        Assert.Equal(field, ex.ParamName);
        Assert.StartsWith(field + " " + PrivacyPlanException.Format(ex.ActualValue) + " is invalid: ", ex.Message, StringComparison.Ordinal);
        Assert.Contains(range, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(PrivacyMechanism.DistributedSkellam, 8.0)]
    [InlineData(PrivacyMechanism.DistributedSkellam, 1.0)]
    [InlineData(PrivacyMechanism.CentralGaussian, 3.0)]
    public void NoiseForEpsilon_Result_MeetsTargetAndIsMinimalToRelative1e4(PrivacyMechanism mechanism, double target)
    {
        PrivacyPlanParameters p = Distributed(4096, 10, 7, 1.0, 20, 1e-6) with { Mechanism = mechanism };
        double z = PrivacyPlan.NoiseForEpsilon(p, target);

        Assert.True(PrivacyPlan.Create(p with { NoiseMultiplier = z }).Epsilon.Epsilon <= target);
        Assert.True(PrivacyPlan.Create(p with { NoiseMultiplier = z * (1 - 1e-4) }).Epsilon.Epsilon > target);
    }

    [Fact]
    public void NoiseForEpsilon_RingCannotHoldTheNoise_RefusedOnTargetNamingBits()
    {
        // 100 clients of 2^20 rounded values fill a tenth of a 20-bit ring; the noise a 0.5 target needs does not fit.
        PrivacyPlanParameters p = Distributed(1 << 20, 100, 70, 1.0, 100, 1e-9) with { Mechanism = PrivacyMechanism.CentralGaussian, Bits = 20 };
        PrivacyPlan.Create(p);
        var ex = Assert.Throws<PrivacyPlanException>(() => PrivacyPlan.NoiseForEpsilon(p, 0.5));

        Assert.Equal("target_epsilon", ex.Field);
        Assert.Contains("bits", ex.Message, StringComparison.Ordinal);
        Assert.Throws<PrivacyPlanException>(() => PrivacyPlan.NoiseForEpsilon(p, double.NaN));
    }

    [Fact]
    public void EpsilonAfter_Rounds_ComposesTheRoundVectorAdditively()
    {
        PrivacyPlan plan = PrivacyPlan.Create(Distributed(4096, 3, 2, 0.5, 5, 1e-6));

        double[] three = plan.RdpAfter(3);
        for (int i = 0; i < three.Length; i++)
        {
            Assert.Equal(3 * plan.RoundRdp[i], three[i]);
        }
        Assert.Equal(0, plan.EpsilonAfter(0).Epsilon);
        Assert.True(plan.EpsilonAfter(4).Epsilon < plan.Epsilon.Epsilon);
        Assert.Equal(plan.Epsilon, plan.EpsilonAfter(5));
    }
}
