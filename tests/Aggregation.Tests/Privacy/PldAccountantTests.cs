using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class PldAccountantTests
{
    // google/differential-privacy python/dp_accounting/dp_accounting/pld/pld_privacy_accountant_test.py
    // (commit 0c0e3fd4), test_gaussian_basic, lines 200-211: Gaussian sigma sqrt(3) composed 1 + 2 times,
    // delta(1) = 0.126936 and epsilon(0.126936) = 1, both to 1e-3.
    [Fact]
    public void Gaussian_DpAccountingBasicCase_MatchesTheirValues()
    {
        var accountant = new PldAccountant();
        accountant.ComposeSubsampledGaussian(1.0, Math.Sqrt(3), 1);
        accountant.ComposeSubsampledGaussian(1.0, Math.Sqrt(3), 2);
        Assert.Equal(0.126936, accountant.GetDelta(1.0), 1e-3);
        double eps = accountant.GetEpsilon(0.126936).Epsilon;
        Assert.Equal(1.0, eps, 1e-3);
        Assert.InRange(eps, 0.98, 1.02);
    }

    // pld_privacy_accountant_test.py (commit 0c0e3fd4), test_poisson_subsampled_gaussian, lines 213-225:
    // q 0.2, sigma 0.5 composed 1 + 2 times, delta(1) = 0.15594 and epsilon(0.15594) = 1, both to 1e-3.
    [Fact]
    public void SubsampledGaussian_DpAccountingCase_MatchesTheirValues()
    {
        var accountant = new PldAccountant();
        accountant.ComposeSubsampledGaussian(0.2, 0.5, 1);
        accountant.ComposeSubsampledGaussian(0.2, 0.5, 2);
        Assert.Equal(0.15594, accountant.GetDelta(1.0), 1e-3);
        double eps = accountant.GetEpsilon(0.15594).Epsilon;
        Assert.Equal(1.0, eps, 1e-3);
        Assert.InRange(eps, 0.98, 1.02);

        // The same three rounds composed at once (one FFT) agree.
        Assert.Equal(eps, PldAccountant.Epsilon(0.2, 0.5, 3, 0.15594).Epsilon, 1e-3);
    }

    [Theory]
    [InlineData(1.0, 0.5)]
    [InlineData(2.0, 1.0)]
    [InlineData(0.7, 2.0)]
    public void Gaussian_SingleRound_IsPessimisticAndTightAgainstExactDelta(double sigma, double epsilon)
    {
        // Exact Gaussian hockey-stick: Phi(1/(2s) - eps s) - e^eps Phi(-1/(2s) - eps s) (Balle & Wang 2018, Theorem 8).
        double exact = PrivacyMath.NormalCdf(1 / (2 * sigma) - epsilon * sigma)
            - Math.Exp(epsilon) * PrivacyMath.NormalCdf(-1 / (2 * sigma) - epsilon * sigma);
        var accountant = new PldAccountant();
        accountant.ComposeSubsampledGaussian(1.0, sigma, 1);
        double delta = accountant.GetDelta(epsilon);
        Assert.True(delta >= exact * (1 - 1e-9), $"delta {delta:R} below exact {exact:R}");
        Assert.True(delta <= exact * 1.01 + 1e-12, $"delta {delta:R} far above exact {exact:R}");
    }

    [Theory]
    [InlineData(0.01, 1.0, 1000, 1e-5)]
    [InlineData(0.04, 1.5, 2250, 1e-5)]
    [InlineData(0.2, 0.8, 50, 1e-6)]
    [InlineData(1.0, 2.0, 10, 1e-5)]
    [InlineData(0.001, 0.8, 10000, 1e-6)]
    public void Epsilon_SameMechanism_NeverAboveRdpEpsilon(double q, double z, long rounds, double delta)
    {
        var rdp = new RdpAccountant();
        rdp.ComposeSubsampledGaussian(q, z, rounds);
        double rdpEpsilon = rdp.GetEpsilon(delta).Epsilon;
        double pldEpsilon = PldAccountant.Epsilon(q, z, rounds, delta).Epsilon;
        Assert.True(pldEpsilon <= rdpEpsilon, $"PLD {pldEpsilon:R} > RDP {rdpEpsilon:R}");
        Assert.True(pldEpsilon > 0.5 * rdpEpsilon, $"PLD {pldEpsilon:R} implausibly far below RDP {rdpEpsilon:R}");
    }

    [Fact]
    public void HockeyStick_BothDirections_AreOneMinusExpBelowSupportAndDecreasing()
    {
        double q = 0.1, sigma = 1.0;
        // Below ln(1 - q) the remove-direction divergence is 1 - e^eps exactly.
        Assert.Equal(1 - Math.Exp(-0.2), PldAccountant.HockeyStick(q, sigma, true, -0.2), 1e-15);
        // Above -ln(1 - q) the add direction has no mass.
        Assert.Equal(0.0, PldAccountant.HockeyStick(q, sigma, false, 0.2));
        double previous = 1;
        for (double eps = -0.05; eps < 3; eps += 0.05)
        {
            double d = PldAccountant.HockeyStick(q, sigma, true, eps);
            Assert.True(d <= previous + 1e-15);
            previous = d;
        }
    }

    [Fact]
    public void Fft_ForwardThenInverse_RoundTripsAndConvolves()
    {
        var random = new Random(7);
        int n = 1024;
        double[] a = Enumerable.Range(0, n).Select(_ => random.NextDouble()).ToArray();
        double[] re = (double[])a.Clone();
        double[] im = new double[n];
        Fft.Transform(re, im, inverse: false);
        // DC term is the sum.
        Assert.Equal(a.Sum(), re[0], 1e-10);
        Fft.Transform(re, im, inverse: true);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(a[i], re[i], 1e-12);
            Assert.Equal(0.0, im[i], 1e-12);
        }
        Assert.Throws<ArgumentException>(() => Fft.Transform(new double[3], new double[3], false));
    }
}
