using Federated.Aggregation.Privacy;
using Federated.Protos.V1;

namespace Federated.Coordinator.Rounds;

/// <summary>What a run plan costs: its noise multiplier (given, or found for target_epsilon) and the epsilon after all its rounds.</summary>
public sealed record RunPrice(double NoiseMultiplier, double PlannedEpsilon);

/// <summary>
/// The coordinator's one place where privacy is priced: StartRun's planned epsilon, the noise search for
/// target_epsilon and every released round's charge go through here, so they cannot disagree. RDP is composed
/// additively over released rounds and converted to (epsilon, delta) as in Opacus.
/// </summary>
public static class RunPricing
{
    /// <summary>Ring bit width of the masked sums (the DSkellam plan is calibrated so the sum does not wrap).</summary>
    internal const int RingBits = 32;

    private const double MinNoise = 0.05;
    private const double MaxNoise = 100;

    /// <summary>Prices <paramref name="plan"/> for a global adapter whose lora_B has <paramref name="dimension"/> values.</summary>
    /// <exception cref="InvalidPlanException">The plan cannot be calibrated, or its target_epsilon cannot be met.</exception>
    public static RunPrice Price(RunPlan plan, int dimension)
    {
        ArgumentNullException.ThrowIfNull(plan);
        int clients = RunPlanValidation.MaxClients(plan);
        try
        {
            // Under Poisson sampling the scale is sized for the cap. Distributed Skellam claims no amplification (this
            // codebase has no subsampled Skellam RDP), so each released round is charged in full whatever the rate
            // (conservative); the central Gaussian uses the subsampled Gaussian RDP at the rate (see EpsilonAfter).
            double z = plan.NoiseMultiplier > 0 ? plan.NoiseMultiplier : NoiseForTarget(plan, dimension);
            return new RunPrice(z, EpsilonAfter(plan, Quantizer(plan, dimension, z), z, (int)plan.Rounds));
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new InvalidPlanException($"the plan cannot be calibrated for {clients} clients of {dimension} values: {ex.Message.Split(" (Parameter")[0]}");
        }
    }

    /// <summary>The round's quantizer: distributed Skellam with the run's noise, or (central Gaussian) the same rounding without client noise.</summary>
    internal static DSkellamPlan Quantizer(RunPlan plan, int dimension, double noiseMultiplier) =>
        DSkellamPlan.Calibrate(new DSkellamParameters(dimension, RingBits, plan.ClipNorm,
            plan.Mechanism == NoiseMechanism.CentralGaussian ? 0 : noiseMultiplier, RunPlanValidation.MaxClients(plan), RunPlanValidation.Threshold(plan)));

    /// <summary>
    /// Epsilon after <paramref name="releasedRounds"/> released rounds, RDP composed additively and converted as in Opacus.
    /// Distributed Skellam: the Skellam RDP of the calibrated plan (Agarwal et al. 2021, Thm 3.5), no amplification.
    /// Central Gaussian: the Gaussian RDP, subsampled at the Poisson rate when clients are sampled (Mironov, Talwar and
    /// Zhang 2019), with q = 1 (no amplification) for a fixed count.
    /// </summary>
    internal static double EpsilonAfter(RunPlan plan, DSkellamPlan quantizer, double noiseMultiplier, int releasedRounds)
    {
        double[] rdp = plan.Mechanism == NoiseMechanism.CentralGaussian
            ? RdpAnalysis.SubsampledGaussian(plan.SamplingRate > 0 ? plan.SamplingRate : 1.0, noiseMultiplier, RdpOrders.Default)
            : quantizer.RdpPerRound(RdpOrders.Default);
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] *= releasedRounds;
        }
        return RdpAnalysis.Epsilon(RdpOrders.Default, rdp, plan.Delta).Epsilon;
    }

    /// <summary>Smallest noise multiplier (bisection to 1e-4 relative) whose planned epsilon meets target_epsilon.</summary>
    private static double NoiseForTarget(RunPlan plan, int dimension)
    {
        double low = MinNoise, high = MaxNoise;
        if (Planned(plan, dimension, high) > plan.TargetEpsilon)
        {
            throw new InvalidPlanException($"target_epsilon {plan.TargetEpsilon} cannot be met with noise multiplier <= {high}");
        }
        while ((high - low) / high > 1e-4)
        {
            double mid = (low + high) / 2;
            if (Planned(plan, dimension, mid) <= plan.TargetEpsilon)
            {
                high = mid;
            }
            else
            {
                low = mid;
            }
        }
        return high;
    }

    private static double Planned(RunPlan plan, int dimension, double noiseMultiplier) =>
        EpsilonAfter(plan, Quantizer(plan, dimension, noiseMultiplier), noiseMultiplier, (int)plan.Rounds);
}
