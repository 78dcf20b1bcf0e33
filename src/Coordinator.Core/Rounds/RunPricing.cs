using Federated.Aggregation.Privacy;
using Federated.Protos.V1;
using Federated.Wire;

namespace Federated.Coordinator.Rounds;

/// <summary>What a run plan costs: its noise multiplier (given, or found for target_epsilon) and the priced plan every round uses.</summary>
/// <param name="NoiseMultiplier">z as given, or the smallest that meets target_epsilon.</param>
/// <param name="Privacy">The plan's pricing: the encoding clients use, the central noise, each round's RDP, the run's epsilon.</param>
/// <param name="ClientLevel">False under privacy_unit record: the plan only sizes the encoding (no client noise, no client-level charge).</param>
public sealed record RunPrice(double NoiseMultiplier, PrivacyPlan Privacy, bool ClientLevel = true)
{
    /// <summary>Epsilon after all planned rounds, at the plan's delta; 0 under privacy_unit record, which charges no client-level budget.</summary>
    public double PlannedEpsilon => ClientLevel ? Privacy.Epsilon.Epsilon : 0;
}

/// <summary>
/// The coordinator's one door to <see cref="PrivacyPlan"/>: StartRun's planned epsilon and reservation, the noise search
/// for target_epsilon, every round's manifest and every released round's charge come from the plan priced here, so
/// they cannot disagree with each other, with the officer's calculator or with the edge ledgers (which price the same
/// parameters from the manifest).
/// </summary>
public static class RunPricing
{
    /// <summary>Ring bit width of the masked sums.</summary>
    internal const int RingBits = 32;

    /// <summary>The noise multiplier that sizes the ring of a record-only run (its encoding is the central one; no noise is added).</summary>
    internal const double RecordOnlyNominalNoise = 1.0;

    /// <summary>Prices <paramref name="plan"/> for a global adapter whose lora_B has <paramref name="dimension"/> values.</summary>
    /// <exception cref="InvalidPlanException">The plan cannot be priced, or its target_epsilon cannot be met; the message names the field, the value and the range.</exception>
    public static RunPrice Price(RunPlan plan, int dimension)
    {
        ArgumentNullException.ThrowIfNull(plan);
        try
        {
            if (!PrivacyUnitWire.HasClientLevel(plan.PrivacyUnit))
            {
                // Record-level only: clients encode as under central noise (none of their own) and the coordinator adds
                // none; the nominal z only leaves room in the ring, and nothing is charged to the client-level budget.
                return new RunPrice(RecordOnlyNominalNoise, PrivacyPlan.Create(Parameters(plan, dimension, RecordOnlyNominalNoise)), ClientLevel: false);
            }
            double z = plan.NoiseMultiplier > 0
                ? plan.NoiseMultiplier
                : PrivacyPlan.NoiseForEpsilon(Parameters(plan, dimension, 1.0), plan.TargetEpsilon);
            return new RunPrice(z, PrivacyPlan.Create(Parameters(plan, dimension, z)));
        }
        catch (PrivacyPlanException ex)
        {
            throw new InvalidPlanException($"{ex.Message} (pricing {RunPlanValidation.MaxClients(plan)} clients of {dimension} values)");
        }
    }

    /// <summary>The plan as the pricing sees it, for a lora_B of <paramref name="dimension"/> values and noise multiplier <paramref name="noiseMultiplier"/>.</summary>
    /// <remarks>
    /// Under Poisson sampling the ring is sized for the cap; the sample is never secret (every participant is named in
    /// its manifest, the SecAgg+ roster and the round.start audit entry, and every participant receives the output),
    /// so no amplification by sampling is claimed: each released round is priced as if all were sampled.
    /// </remarks>
    public static PrivacyPlanParameters Parameters(RunPlan plan, int dimension, double noiseMultiplier)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return new PrivacyPlanParameters(
            plan.Mechanism == NoiseMechanism.CentralGaussian || !PrivacyUnitWire.HasClientLevel(plan.PrivacyUnit) ? PrivacyMechanism.CentralGaussian : PrivacyMechanism.DistributedSkellam,
            dimension, RunPlanValidation.MaxClients(plan), RunPlanValidation.Threshold(plan), RingBits, plan.ClipNorm, noiseMultiplier,
            plan.Rounds, plan.Delta, SamplingRate: plan.SamplingRate, SampleIsSecret: false, Adjacency: PrivacyUnitNames.ProductAdjacency);
    }

    /// <summary>
    /// Puts the run's privacy unit and its record-level parameters on <paramref name="status"/>. No record-level epsilon:
    /// it depends on each holder's own record count, which only the holder knows (its ledger has it).
    /// </summary>
    internal static void DescribeUnits(RunStatus status, RunPlan plan)
    {
        ArgumentNullException.ThrowIfNull(status);
        ArgumentNullException.ThrowIfNull(plan);
        status.RunPrivacyUnit = plan.PrivacyUnit == PrivacyUnit.Unspecified ? PrivacyUnit.Client : plan.PrivacyUnit;
        status.RecordNoiseMultiplier = plan.RecordNoiseMultiplier;
        status.RecordMaxGradNorm = plan.RecordMaxGradNorm;
        status.RecordExpectedBatch = plan.RecordExpectedBatch;
    }
}
