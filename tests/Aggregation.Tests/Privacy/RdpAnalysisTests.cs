using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class RdpAnalysisTests
{
    private static void AssertEpsilonClose(double expected, double actual) =>
        Assert.True(Math.Abs(actual - expected) <= 1e-6 * Math.Max(1.0, expected), $"epsilon {actual:R}, expected {expected:R}");

    [Fact]
    public void Epsilon_OpacusRdpAccountantTest_MatchesOpacusOnItsOrders()
    {
        // pytorch/opacus opacus/tests/accountants_test.py (commit 030b723f), test_rdp_accountant, lines 25-35:
        // noise 1.5, sample rate 0.04, steps int(90 / 0.04) = 2250, delta 1e-5 -> epsilon 7.32911117143.
        var accountant = new RdpAccountant(RdpOrders.Opacus);
        accountant.ComposeSubsampledGaussian(0.04, 1.5, 2250);
        PrivacySpent spent = accountant.GetEpsilon(1e-5);
        AssertEpsilonClose(7.32911117143, spent.Epsilon);
        Assert.NotNull(spent.Order);

        // The project's longer order list can only lower epsilon, and here the optimum lies inside Opacus's list.
        var full = new RdpAccountant();
        full.ComposeSubsampledGaussian(0.04, 1.5, 2250);
        PrivacySpent fullSpent = full.GetEpsilon(1e-5);
        Assert.True(fullSpent.Epsilon <= spent.Epsilon);
        Assert.Equal(spent.Order, fullSpent.Order);
    }

    [Fact]
    public void Epsilon_OpacusRdpModuleDocExample_MatchesEpsilonAndOrder()
    {
        // pytorch/opacus opacus/accountants/analysis/rdp.py (commit 1235e1e1), module docstring lines 32-43, run as a
        // doctest with +NUMBER: parameters [(1e-5, 1.0, 10), (1e-4, 3.0, 4)], orders 2..32, delta 1e-5 -> (0.336, 23).
        double[] orders = Enumerable.Range(2, 31).Select(i => (double)i).ToArray();
        var accountant = new RdpAccountant(orders);
        accountant.ComposeSubsampledGaussian(1e-5, 1.0, 10);
        accountant.ComposeSubsampledGaussian(1e-4, 3.0, 4);
        PrivacySpent spent = accountant.GetEpsilon(1e-5);
        Assert.Equal(0.336, spent.Epsilon, 5e-4);
        Assert.Equal(23.0, spent.Order);
    }

    [Fact]
    public void SubsampledGaussian_DpAccountingPerOrderValues_MatchToRtol1e4()
    {
        // google/differential-privacy python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py
        // (commit 0b109e95), test_compute_rdp_poisson_sampled_gaussian, lines 259-285: q 0.01, sigma 2.5, count 50.
        // Order 1.5 is left out: dp_accounting's value there (6.70579741e-04) is 3% above the exact A_alpha
        // integral (6.50071e-04, see ComputeLogA_DpAccountingMpParameters_MatchesNumericalIntegral), so it comes
        // from a looser bound than Opacus's exact series, which this project follows.
        double[] orders = [2.5, 5, 50, 100];
        double[] expected = [1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02];
        double[] rdp = RdpAnalysis.SubsampledGaussian(0.01, 2.5, orders);
        for (int i = 0; i < orders.Length; i++)
        {
            double actual = rdp[i] * 50;
            // np.allclose: |a - b| <= atol + rtol * |b| with atol 1e-8.
            Assert.True(Math.Abs(actual - expected[i]) <= 1e-8 + 1e-4 * expected[i], $"order {orders[i]}: {actual:R} vs {expected[i]:R}");
        }
        Assert.True(double.IsPositiveInfinity(RdpAnalysis.SubsampledGaussian(0.01, 2.5, double.PositiveInfinity)));
    }

    [Fact]
    public void SubsampledGaussian_Order1Point5_StaysBelowDpAccountingBound()
    {
        double exact = RdpAnalysis.SubsampledGaussian(0.01, 2.5, 1.5) * 50;
        Assert.True(exact <= 6.70579741e-04);
        Assert.Equal(LogAByQuadrature(0.01, 2.5, 1.5) / 0.5 * 50, exact, 1e-12);
    }

    // rdp_privacy_accountant_test.py (commit 0b109e95), `params` of test_compute_log_a_equals_mp, lines 314-353;
    // that test compares log(A_alpha) with an mpmath integral at rtol 1e-4, atol 1e-8. Here the integral is a
    // log-space trapezoid rule, which is spectrally accurate for this smooth, Gaussian-tailed integrand.
    [Theory]
    [InlineData(1e-7, 0.1, 1.01)]
    [InlineData(1e-6, 0.1, 256.0)]
    [InlineData(1e-5, 0.1, 256.1)]
    [InlineData(1e-6, 1.0, 27.0)]
    [InlineData(1e-4, 1.0, 1.5)]
    [InlineData(1e-3, 1.0, 2.0)]
    [InlineData(0.01, 10.0, 20.0)]
    [InlineData(0.1, 100.0, 20.5)]
    [InlineData(0.99, 0.1, 256.0)]
    [InlineData(0.999, 100.0, 256.1)]
    public void ComputeLogA_DpAccountingMpParameters_MatchesNumericalIntegral(double q, double sigma, double order)
    {
        double logA = RdpAnalysis.ComputeLogA(q, sigma, order);
        double reference = LogAByQuadrature(q, sigma, order);
        Assert.True(Math.Abs(logA - reference) <= 1e-8 + 1e-4 * Math.Abs(reference), $"log A = {logA:R}, quadrature {reference:R}");
    }

    // log of A_alpha = integral of N(z; 0, sigma^2) * ((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha dz.
    private static double LogAByQuadrature(double q, double sigma, double alpha)
    {
        double lo = -40 * sigma - 2, hi = alpha + 40 * sigma + 2;
        double h = sigma / 400;
        long n = (long)Math.Ceiling((hi - lo) / h);
        double max = double.NegativeInfinity;
        var logs = new double[n + 1];
        for (long k = 0; k <= n; k++)
        {
            double z = lo + k * h;
            double logMu0 = -z * z / (2 * sigma * sigma) - Math.Log(sigma * Math.Sqrt(2 * Math.PI));
            double t = (2 * z - 1) / (2 * sigma * sigma);
            // log((1 - q) + q e^t) computed stably on both sides.
            double logMix = t > 0
                ? t + Math.Log(q) + PrivacyMath.LogOnePlus((1 - q) / q * Math.Exp(-t))
                : Math.Log(1 - q) + PrivacyMath.LogOnePlus(q / (1 - q) * Math.Exp(t));
            logs[k] = logMu0 + alpha * logMix;
            max = Math.Max(max, logs[k]);
        }
        double sum = 0;
        for (long k = 0; k <= n; k++)
        {
            sum += Math.Exp(logs[k] - max) * (k == 0 || k == n ? 0.5 : 1.0);
        }
        return max + Math.Log(sum * h);
    }

    [Fact]
    public void Epsilon_DpAccountingPureDpCase_MatchesHandComputedValueAndOrder()
    {
        // rdp_privacy_accountant_test.py (commit 0b109e95), test_compute_epsilon_delta_pure_dp, lines 287-296:
        // orders 2..32, RDP 1.1 everywhere, delta 1e-5 -> epsilon 1.32783806176 at order 32.
        double[] orders = Enumerable.Range(2, 31).Select(i => (double)i).ToArray();
        double[] rdp = orders.Select(_ => 1.1).ToArray();
        PrivacySpent spent = RdpAnalysis.Epsilon(orders, rdp, 1e-5);
        Assert.Equal(1.32783806176, spent.Epsilon, 1e-10);
        Assert.Equal(32.0, spent.Order);
    }

    [Fact]
    public void Epsilon_DpAccountingGaussianOneEpsilonCase_IsOne()
    {
        // rdp_privacy_accountant_test.py (commit 0b109e95), test_compute_epsilon_delta_gaussian, lines 304-312:
        // q 1, sigma 4.530877117 over orders 0.001 * i gives (1, 1e-6)-DP (assertAlmostEqual, 7 places).
        double[] orders = Enumerable.Range(1001, 99000).Select(i => 0.001 * i).ToArray();
        double[] rdp = RdpAnalysis.SubsampledGaussian(1.0, 4.530877117, orders);
        PrivacySpent spent = RdpAnalysis.Epsilon(orders, rdp, 1e-6);
        Assert.Equal(1.0, spent.Epsilon, 1e-7);
    }

    [Theory]
    [InlineData(3.14159, 2.71828)]
    [InlineData(2.0, 0.5)]
    [InlineData(1024.0, 10.0)]
    public void SubsampledGaussian_FullSampling_IsAlphaOverTwoSigmaSquared(double order, double sigma)
    {
        // Closed form (Mironov 2017, Proposition 7); also dp_accounting's test_compute_rdp_gaussian (line 197).
        Assert.Equal(order / (2 * sigma * sigma), RdpAnalysis.SubsampledGaussian(1.0, sigma, order), 1e-15);
    }

    [Theory]
    [InlineData(0.01, 1.0)]
    [InlineData(0.2, 0.7)]
    [InlineData(0.5, 3.0)]
    public void SubsampledGaussian_FractionalOrders_InterpolateBetweenIntegerNeighbours(double q, double sigma)
    {
        // RDP is non-decreasing in the order; the signed series must respect that next to the exact integer sums.
        double r2 = RdpAnalysis.SubsampledGaussian(q, sigma, 2.0);
        double r25 = RdpAnalysis.SubsampledGaussian(q, sigma, 2.5);
        double r3 = RdpAnalysis.SubsampledGaussian(q, sigma, 3.0);
        Assert.InRange(r25, r2, r3);
        // Integer order 2 by the closed form: log(1 + q^2 (e^{1/sigma^2} - 1)) (Mironov et al. 2019, Section 3.3).
        Assert.Equal(Math.Log(1 + q * q * (Math.Exp(1 / (sigma * sigma)) - 1)), r2, 1e-13);
        // Fractional order very close to an integer matches the integer formula.
        Assert.Equal(r3, RdpAnalysis.SubsampledGaussian(q, sigma, 3.0 + 1e-9), 1e-7);
    }

    [Fact]
    public void SubsampledGaussian_ZeroSamplingOrZeroNoise_FollowsOpacusConventions()
    {
        Assert.Equal(0.0, RdpAnalysis.SubsampledGaussian(0.0, 1.0, 2.0));
        Assert.True(double.IsPositiveInfinity(RdpAnalysis.SubsampledGaussian(0.5, 0.0, 2.0)));
    }

    [Fact]
    public void Skellam_LargeVariance_ApproachesGaussianRdp()
    {
        // Agarwal et al. 2021 (arXiv:2110.04995): the Skellam RDP tends to the Gaussian's a*l2^2/(2 var) as var grows.
        double[] orders = [2.0, 8.0, 32.0];
        double l2 = 100, l1 = 100 * 100;
        double variance = Math.Pow(1.1 * l2, 2) * 1e4;
        double[] rdp = RdpAnalysis.Skellam(l1, l2, variance, orders);
        for (int i = 0; i < orders.Length; i++)
        {
            double gaussian = orders[i] * l2 * l2 / (2 * variance);
            Assert.True(rdp[i] >= gaussian);
            Assert.True(rdp[i] <= gaussian * 1.01);
        }
    }

    [Fact]
    public void Skellam_KnownParameters_MatchesClosedForm()
    {
        // l1 = 4, l2 = 2, var = 8, order 3: 3*4/16 + min((5*4 + 24)/(4*64), 12/16) = 0.75 + 44/256.
        double[] rdp = RdpAnalysis.Skellam(4, 2, 8, [3.0]);
        Assert.Equal(0.75 + 44.0 / 256, rdp[0], 1e-15);
    }

    [Fact]
    public void Skellam_FractionalOrders_ChargedAtTheirCeiling()
    {
        // Thm 3.5 holds at integer orders only: 2.5 is charged as 3 (l1 = 40, l2 = 6, var = 50: 3*36/100 + min(...)
        // = 1.08 + min((5*36 + 240)/10000, 120/100) = 1.122, Python), 1.1 as 2, and an integer order as itself.
        double[] rdp = RdpAnalysis.Skellam(40, 6, 50, [1.1, 2.0, 2.5, 3.0]);
        Assert.Equal(1.122, rdp[2], 1e-15);
        Assert.Equal(rdp[3], rdp[2]);
        Assert.Equal(rdp[1], rdp[0]);
        Assert.Equal(2 * 36 / 100.0 + (3 * 36 + 240) / 10000.0, rdp[1], 1e-15);
        Assert.Throws<ArgumentOutOfRangeException>(() => RdpAnalysis.Skellam(40, 6, 50, [1.0]));
    }

    [Fact]
    public void Skellam_DefaultOrders_BestOrderIsAnInteger()
    {
        // z = 1, 100 rounds, Delta2 = 2^10: about 50 a per run, whose conversion is smallest near a = 1.5 when the bound is
        // read at fractional orders (100.7 there). At integer orders the best is a = 2: 100 a/2 + tiny + 13.12 = 112.43.
        double l2 = 1024, variance = l2 * l2;
        double[] rdp = RdpAnalysis.Skellam(l2 * l2, l2, variance, RdpOrders.Default).Select(r => 100 * r).ToArray();
        PrivacySpent spent = RdpAnalysis.Epsilon(RdpOrders.Default, rdp, 1e-6);
        Assert.Equal(2.0, spent.Order);
        Assert.Equal(100 + 100 * (3 + 6) / (4 * variance) - (Math.Log(1e-6) + Math.Log(2)) + Math.Log(0.5), spent.Epsilon, 1e-9);
    }

    [Fact]
    public void DiscreteGaussian_WorkedValues_AreAlphaL2SquaredOverTwoSigmaSquared()
    {
        // CKS 2020 Thm 14: l2^2 = 4 (replace-one of a unit vector), sigma^2 = 9: a * 4 / 18.
        double[] rdp = RdpAnalysis.DiscreteGaussian(4, 9, [1.5, 2.0, 64.0]);
        Assert.Equal(1.5 * 4 / 18, rdp[0], 1e-15);
        Assert.Equal(2.0 * 4 / 18, rdp[1], 1e-15);
        Assert.Equal(64.0 * 4 / 18, rdp[2], 1e-13);
    }

    [Theory]
    [InlineData(2.0, 0.00428650437041895)]
    [InlineData(3.0, 0.009729634361002059)]
    [InlineData(4.0, 0.019097707036746753)]
    [InlineData(3.5, 0.019097707036746753)]
    [InlineData(8.0, 0.7566727644003748)]
    [InlineData(16.0, 4.877799260853755)]
    public void PoissonSubsampled_ZhuWangGeneralBound_MatchesWorkedValues(double order, double expected)
    {
        // Python (math.comb, exact sums): Zhu-Wang 2019 Thm 6 for eps(l) = l / 2 (sigma/Delta = 1) at q = 0.05, capped at eps(a).
        double[] rdp = RdpAnalysis.PoissonSubsampled(l => l / 2.0, 0.05, [order]);
        Assert.Equal(expected, rdp[0], expected * 1e-12);
    }

    [Fact]
    public void PoissonSubsampled_GaussianCurve_BetweenTheTightBoundAndNoSampling()
    {
        int[] orders = [2, 3, 5, 10, 20, 40, 63];
        double[] general = RdpAnalysis.PoissonSubsampled(l => l / (2 * 1.3 * 1.3), 0.01, orders.Select(a => (double)a).ToArray());
        for (int i = 0; i < orders.Length; i++)
        {
            // The Gaussian's own (tight) subsampled RDP (Mironov-Talwar-Zhang) is a lower bound for the general one.
            Assert.True(general[i] >= RdpAnalysis.SubsampledGaussian(0.01, 1.3, orders[i]) * (1 - 1e-9));
            Assert.True(general[i] <= orders[i] / (2 * 1.3 * 1.3));
        }
        Assert.Equal(7.0, RdpAnalysis.PoissonSubsampled(l => l, 1.0, [7.0])[0]);
    }

    [Fact]
    public void Epsilon_ZeroRdp_IsZero()
    {
        Assert.Equal(0.0, RdpAnalysis.Epsilon(RdpOrders.Default, new double[RdpOrders.Default.Count], 1e-6).Epsilon);
    }

    [Fact]
    public void Orders_Default_ContainsOpacusListPlusExtras()
    {
        Assert.Equal(99 + 52, RdpOrders.Opacus.Count);
        Assert.Equal(RdpOrders.Opacus.Count + 5, RdpOrders.Default.Count);
        Assert.Contains(11.0, RdpOrders.Default);
        Assert.Contains(1024.0, RdpOrders.Default);
        Assert.Equal(1.1, RdpOrders.Opacus[0]);
        Assert.Equal(63.0, RdpOrders.Opacus[^1]);
    }
}
