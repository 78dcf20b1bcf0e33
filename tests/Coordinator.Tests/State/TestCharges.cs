using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;

namespace Federated.Coordinator.Tests;

/// <summary>Charges for state tests: each carries the RDP vector of a Gaussian-shaped round (rho * order at every order).</summary>
internal static class TestCharges
{
    /// <summary>Per-round RDP coefficient of the charges below unless a test says otherwise.</summary>
    public const double Rho = 0.01;

    public static RdpCharge Rdp(double rho = Rho) => new(RdpOrders.Default, [.. RdpOrders.Default.Select(a => a * rho)]);

    /// <summary>Epsilon of <paramref name="rounds"/> such rounds composed, at <paramref name="delta"/>.</summary>
    public static double Epsilon(int rounds, double delta, double rho = Rho) =>
        RdpAnalysis.Epsilon(RdpOrders.Default, [.. RdpOrders.Default.Select(a => a * rho * rounds)], delta).Epsilon;
}
