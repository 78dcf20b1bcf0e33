using Federated.Aggregation.Privacy;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// What the tests' runs must be charged, computed from the papers' formulas on the calibrated encodings rather than
/// through <see cref="PrivacyPlan"/>: replace-one doubles both integer sensitivities (Skellam RDP, Agarwal, Kairouz and
/// Liu 2021, Thm 3.5; discrete Gaussian RDP a * (2 Delta)^2 / (2 sigma^2), Canonne, Kamath and Steinke 2020), rounds
/// compose additively per order, and no amplification is claimed for a sampled (public) roster.
/// </summary>
internal static class ExpectedPrice
{
    /// <summary>Distributed Skellam on a 32-bit ring with C = 1: epsilon after <paramref name="rounds"/> at <paramref name="delta"/>.</summary>
    public static double Skellam(int d, int clients, int threshold, double z, int rounds, double delta)
    {
        DSkellamPlan q = DSkellamPlan.Calibrate(new DSkellamParameters(d, 32, 1.0, z, clients, threshold));
        double[] round = RdpAnalysis.Skellam(2 * q.L1Sensitivity, 2 * q.L2Sensitivity, q.ThresholdNoiseVariance, RdpOrders.Default);
        return RdpAnalysis.Epsilon(RdpOrders.Default, [.. round.Select(r => r * rounds)], delta).Epsilon;
    }

    /// <summary>Central discrete Gaussian on a 32-bit ring with C = 1: epsilon after <paramref name="rounds"/> at <paramref name="delta"/>.</summary>
    public static double Central(int d, int clients, int threshold, double z, int rounds, double delta)
    {
        CentralGaussianPlan central = CentralGaussianPlan.Calibrate(new DSkellamParameters(d, 32, 1.0, z, clients, threshold));
        double sensitivitySquared = 4 * central.Quantizer.NormBoundSquared;
        return RdpAnalysis.Epsilon(RdpOrders.Default, [.. RdpOrders.Default.Select(a => rounds * a * sensitivitySquared / (2.0 * central.SigmaSquared))], delta).Epsilon;
    }
}
