namespace Federated.Aggregation.Privacy;

/// <summary>Composes RDP charges per order (RDP adds under composition) and converts them to (epsilon, delta).</summary>
public sealed class RdpAccountant
{
    private readonly double[] _orders;
    private readonly double[] _rdp;

    /// <summary>Creates an empty accountant over the given orders (default: <see cref="RdpOrders.Default"/>).</summary>
    public RdpAccountant(IReadOnlyList<double>? orders = null)
    {
        _orders = (orders ?? RdpOrders.Default).ToArray();
        if (_orders.Length == 0)
        {
            throw new ArgumentException("at least one RDP order is required", nameof(orders));
        }
        foreach (double a in _orders)
        {
            if (!(a > 1.0))
            {
                throw new ArgumentOutOfRangeException(nameof(orders), a, "every RDP order must be > 1");
            }
        }
        _rdp = new double[_orders.Length];
    }

    /// <summary>The orders, in the order the RDP vector uses.</summary>
    public IReadOnlyList<double> Orders => _orders;

    /// <summary>The composed RDP per order so far.</summary>
    public IReadOnlyList<double> Rdp => _rdp;

    /// <summary>Adds <paramref name="steps"/> rounds of the Poisson-subsampled Gaussian mechanism.</summary>
    public void ComposeSubsampledGaussian(double samplingRate, double noiseMultiplier, long steps = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        Compose(RdpAnalysis.SubsampledGaussian(samplingRate, noiseMultiplier, _orders), steps);
    }

    /// <summary>Adds an RDP vector (one value per order) <paramref name="steps"/> times.</summary>
    public void Compose(ReadOnlySpan<double> rdpPerStep, long steps = 1)
    {
        if (rdpPerStep.Length != _orders.Length)
        {
            throw new ArgumentException($"rdp vector has {rdpPerStep.Length} entries; the accountant has {_orders.Length} orders", nameof(rdpPerStep));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(steps);
        for (int i = 0; i < _rdp.Length; i++)
        {
            if (double.IsNaN(rdpPerStep[i]) || rdpPerStep[i] < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(rdpPerStep), rdpPerStep[i], "RDP values must be >= 0");
            }
            _rdp[i] += steps == 0 ? 0 : rdpPerStep[i] * steps;
        }
    }

    /// <summary>The smallest epsilon over the orders for the given delta, and the order that attains it.</summary>
    public PrivacySpent GetEpsilon(double delta) => RdpAnalysis.Epsilon(_orders, _rdp, delta);
}
