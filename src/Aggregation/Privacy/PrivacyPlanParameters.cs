namespace Federated.Aggregation.Privacy;

/// <summary>
/// Everything a run's privacy depends on, as the officer and the engineer choose it. <see cref="PrivacyPlan.Create"/>
/// validates it (every refusal names the field, the value and the range) and prices it.
/// </summary>
/// <param name="Mechanism">Distributed Skellam or central discrete Gaussian.</param>
/// <param name="Dimension">d: values per client update before padding to a power of two (1..2^28).</param>
/// <param name="Clients">n: most clients summed in one round (sizes the ring bound); with Poisson sampling the cap.</param>
/// <param name="Threshold">t: the SecAgg threshold, fewest survivors whose sum is released (1..n).</param>
/// <param name="Bits">b: SecAgg sums in Z_(2^b) (16..32).</param>
/// <param name="ClipNorm">C: L2 clip norm of each client's update.</param>
/// <param name="NoiseMultiplier">z: noise standard deviation over one client's rounded L2 norm bound Delta2 (integer
/// units): the t shares of distributed noise sum to variance (z Delta2)^2, the central discrete Gaussian has sigma = z Delta2.</param>
/// <param name="Rounds">Released rounds of the run.</param>
/// <param name="Delta">delta of the run's (epsilon, delta) statement, in (0, 1).</param>
/// <param name="SamplingRate">q: Poisson sampling rate in (0, 1], or 0 for a fixed count of clients.</param>
/// <param name="SampleIsSecret">Whether the sample is hidden from everyone who sees the outputs. Amplification by
/// sampling is claimed only then (and only for central add/remove, the case the Zhu-Wang bound covers); in this product
/// it never is, because participants are named in the manifest, the SecAgg roster and the audit trail.</param>
/// <param name="Adjacency">The neighbouring relation; the product uses <see cref="PrivacyUnitNames.ProductAdjacency"/>.</param>
public sealed record PrivacyPlanParameters(
    PrivacyMechanism Mechanism,
    int Dimension,
    int Clients,
    int Threshold,
    int Bits,
    double ClipNorm,
    double NoiseMultiplier,
    long Rounds,
    double Delta,
    double SamplingRate = 0,
    bool SampleIsSecret = false,
    Adjacency Adjacency = PrivacyUnitNames.ProductAdjacency)
{
    /// <summary>Most rounds one plan may price.</summary>
    public const long MaxRounds = 10_000_000;

    /// <summary>Largest noise multiplier one plan may use.</summary>
    public const double MaxNoiseMultiplier = 1e4;

    /// <summary>Conditional rounding failure bound (TFF's default exp(-1/2)).</summary>
    public double Beta { get; init; } = 0.60653065971263342;

    /// <summary>Distributed only: k of the sub-Gaussian wrap bound (see <see cref="DSkellamPlan.Calibrate"/>).</summary>
    public double WrapStdDevs { get; init; } = 4.0;

    /// <summary>The DSkellam quantizer parameters these describe (the noise multiplier as given; central clients use 0).</summary>
    public DSkellamParameters ToDSkellamParameters() =>
        new(Dimension, Bits, ClipNorm, NoiseMultiplier, Clients, Threshold, Beta, WrapStdDevs);

    /// <summary>Throws <see cref="PrivacyPlanException"/> for the first field outside its range.</summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Mechanism))
        {
            throw new PrivacyPlanException("mechanism", Mechanism, "use distributed or central");
        }
        if (!Enum.IsDefined(Adjacency))
        {
            throw new PrivacyPlanException("adjacency", Adjacency, "use replace-one, zero-out or add-remove");
        }
        if (Mechanism == PrivacyMechanism.DistributedSkellam && Adjacency == Adjacency.AddRemove)
        {
            throw new PrivacyPlanException("adjacency", PrivacyUnitNames.Name(Adjacency),
                "distributed noise cannot be priced for add-remove (the removed client's noise share leaves with it); use replace-one or zero-out");
        }
        if (Dimension is < 1 or > 1 << 28)
        {
            throw new PrivacyPlanException("dimension", Dimension, "use 1..2^28 (268435456)");
        }
        if (Clients is < 1 or > 1_000_000)
        {
            throw new PrivacyPlanException("clients", Clients, "use 1..1000000");
        }
        if (Threshold < 1 || Threshold > Clients)
        {
            throw new PrivacyPlanException("threshold", Threshold, $"use 1..clients ({Clients})");
        }
        if (Bits is < 16 or > 32)
        {
            throw new PrivacyPlanException("bits", Bits, "use 16..32");
        }
        if (!(ClipNorm > 0) || double.IsInfinity(ClipNorm))
        {
            throw new PrivacyPlanException("clip_norm", ClipNorm, "use a finite number > 0");
        }
        if (!(NoiseMultiplier > 0) || NoiseMultiplier > MaxNoiseMultiplier)
        {
            throw new PrivacyPlanException("noise_multiplier", NoiseMultiplier, $"use a number in (0, {MaxNoiseMultiplier}]");
        }
        if (Rounds is < 1 or > MaxRounds)
        {
            throw new PrivacyPlanException("rounds", Rounds, $"use 1..{MaxRounds}");
        }
        if (!(Delta > 0 && Delta < 1))
        {
            throw new PrivacyPlanException("delta", Delta, "use a number in (0, 1)");
        }
        if (!(SamplingRate == 0 || (SamplingRate > 0 && SamplingRate <= 1)))
        {
            throw new PrivacyPlanException("sampling_rate", SamplingRate, "use 0 (a fixed count of clients) or a rate in (0, 1]");
        }
        if (SampleIsSecret && !(SamplingRate > 0 && SamplingRate < 1))
        {
            throw new PrivacyPlanException("sample_is_secret", SampleIsSecret, $"a secret sample needs a Poisson sampling rate in (0, 1), not {SamplingRate}");
        }
        if (!(Beta > 0 && Beta < 1))
        {
            throw new PrivacyPlanException("beta", Beta, "use a number in (0, 1)");
        }
        if (!(WrapStdDevs > 0) || double.IsInfinity(WrapStdDevs))
        {
            throw new PrivacyPlanException("wrap_std_devs", WrapStdDevs, "use a finite number > 0");
        }
    }
}
