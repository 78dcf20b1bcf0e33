using Federated.Aggregation.Privacy;
using Federated.Protos.V1;

namespace Federated.EdgeClient.Policy;

/// <summary>
/// A round's privacy plan as the edge recomputes it from the signed manifest and the lora_B it downloaded: the same
/// <see cref="PrivacyPlan"/> the coordinator priced the round with, so the local ledger charges what the coordinator's
/// ledger charges, and the encoding (scale, noise share) is the edge's own calculation, checked against the manifest.
/// </summary>
internal static class ManifestPrivacy
{
    /// <summary>
    /// The plan's parameters for one round. The relation must be the product's (replace-one): the edge prices what the
    /// round really protects, not a weaker relation a coordinator might name.
    /// </summary>
    /// <exception cref="PrivacyPlanException">A field is missing, unusable or names another relation.</exception>
    public static PrivacyPlanParameters Parameters(RoundManifest manifest, int dimension)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        DpParameters dp = manifest.Dp ?? throw new PrivacyPlanException("dp", null, "the manifest must carry its DP parameters");
        SecAggParameters secagg = manifest.Secagg ?? throw new PrivacyPlanException("secagg", null, "the manifest must carry its SecAgg+ parameters");
        string product = PrivacyUnitNames.Name(PrivacyUnitNames.ProductAdjacency);
        if (dp.Adjacency != product)
        {
            throw new PrivacyPlanException("adjacency", dp.Adjacency, $"this client prices rounds for {product} (participation is public)");
        }
        PrivacyMechanism mechanism = dp.Mechanism switch
        {
            NoiseMechanism.DistributedSkellam => PrivacyMechanism.DistributedSkellam,
            NoiseMechanism.CentralGaussian => PrivacyMechanism.CentralGaussian,
            _ => throw new PrivacyPlanException("mechanism", dp.Mechanism, "use distributed_skellam or central_gaussian"),
        };
        // The scale is sized for the most clients the round may sum (the run's cap under Poisson sampling).
        uint maxClients = dp.MaxClients == 0 ? secagg.Participants : dp.MaxClients;
        if (maxClients < secagg.Participants || maxClients > 1_000_000 || secagg.Threshold > int.MaxValue || secagg.RingBits > 64)
        {
            throw new PrivacyPlanException("max_clients", dp.MaxClients, $"use {secagg.Participants} (the round's participants)..1000000");
        }
        return new PrivacyPlanParameters(mechanism, dimension, (int)maxClients, (int)secagg.Threshold, (int)secagg.RingBits, dp.ClipNorm, dp.NoiseMultiplier,
            Rounds: 1, dp.Delta, Adjacency: PrivacyUnitNames.ProductAdjacency);
    }
}
