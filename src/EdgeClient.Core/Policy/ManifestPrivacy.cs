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
        return new PrivacyPlanParameters(mechanism, dimension, (int)maxClients, NoiseThreshold(dp, secagg), (int)secagg.RingBits, dp.ClipNorm, dp.NoiseMultiplier,
            Rounds: 1, dp.Delta, Adjacency: PrivacyUnitNames.ProductAdjacency);
    }

    /// <summary>
    /// How many noise shares the round is priced for: the release threshold dp.min_survivors (0: secagg.threshold, as
    /// manifests from before the field). Fewer shares price a higher epsilon, so where the two thresholds could both
    /// bound the release the smaller is taken: with the complete graph t shares already unmask a sum of t survivors,
    /// so a min_survivors above secagg.threshold there would claim noise the protocol does not guarantee. With a sparse
    /// graph secagg.threshold bounds one neighbourhood, not the release, and min_survivors is what the noise is sized for.
    /// </summary>
    /// <exception cref="PrivacyPlanException">min_survivors is above the round's participants.</exception>
    public static int NoiseThreshold(DpParameters dp, SecAggParameters secagg)
    {
        ArgumentNullException.ThrowIfNull(dp);
        ArgumentNullException.ThrowIfNull(secagg);
        if (dp.MinSurvivors > secagg.Participants)
        {
            throw new PrivacyPlanException("min_survivors", dp.MinSurvivors, $"use 0 (secagg.threshold) or 1..{secagg.Participants} (the round's participants)");
        }
        if (dp.MinSurvivors == 0)
        {
            return (int)secagg.Threshold;
        }
        bool complete = secagg.Neighbours + 1 >= secagg.Participants;
        return (int)(complete ? Math.Min(dp.MinSurvivors, secagg.Threshold) : dp.MinSurvivors);
    }
}
