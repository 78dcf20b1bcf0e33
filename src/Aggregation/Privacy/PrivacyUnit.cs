namespace Federated.Aggregation.Privacy;

/// <summary>Where a round's privacy noise is added.</summary>
public enum PrivacyMechanism
{
    /// <summary>
    /// Each client adds its share of Skellam noise to its rounded update before secure aggregation, so the coordinator
    /// never sees a sum without the noise of at least the threshold number of clients (Agarwal, Kairouz and Liu 2021).
    /// </summary>
    DistributedSkellam,

    /// <summary>
    /// Clients send rounded updates without noise; the coordinator adds discrete Gaussian noise, as integers, to the
    /// modular sum (Canonne, Kamath and Steinke 2020). Trusts the coordinator with the unmasked sum.
    /// </summary>
    CentralGaussian,
}

/// <summary>
/// The neighbouring relation an epsilon is stated for: which two worlds it keeps apart. Every guarantee this system
/// prints is client-level (the unit is one client's whole contribution, that is its update in every round it takes
/// part in) and names one of these.
/// </summary>
/// <remarks>
/// <para>
/// <b>Why the product states replace-one.</b> A round's participants are named in its manifest, in the SecAgg roster
/// and in the <c>round.start</c> audit entry, and every participant receives the round's output. Whether a client took
/// part is therefore public, so add/remove of a client (the world where it did not take part) cannot be protected at
/// all: the roster alone tells the two worlds apart. What can be protected is what a participant's data did to the
/// output. Replace-one (the participant's data swapped for any other data) is the strongest such statement, and the one
/// a fixed-count selection implies anyway: removing a selected client puts another in its place. Zero-out (the
/// participant's update replaced by nothing) is weaker: it bounds "real data versus no data", while replace-one bounds
/// "this data versus any other", which is what an attacker inferring a client's data must break (zero-out: Kairouz et
/// al. 2021, "Practical and private (deep) learning without sampling or shuffling"; replace-one versus add/remove:
/// Kifer and Machanavajjhala 2011, bounded versus unbounded differential privacy).
/// </para>
/// <para>
/// <b>The math per relation.</b> With a client's rounded integer vector bounded by Delta2 in L2 and Delta1 in L1:
/// replace-one changes the sum by at most 2 Delta2 (L2) and 2 Delta1 (L1); zero-out and add/remove by Delta2 and Delta1.
/// Under distributed noise the client's own noise share stays in the sum for replace-one (the replacing data comes with
/// a fresh share from the same honest device) and for zero-out (the client still takes part), so the t shares of the
/// threshold count. Under add/remove the removed client's share leaves with it, so the two worlds differ in noise
/// variance as well as in mean; the Renyi divergence between differently scaled noises is infinite above an order of
/// about the number of remaining shares (for Gaussians, D_a(N(m, (k+1)v) || N(0, kv)) is infinite for a >= k + 1: Gil,
/// Alajaji and Linder 2013, the Renyi divergence of two normals is finite only while (1-a) s1^2 + a s2^2 > 0), so the
/// common "count t - 1 shares" shortcut is not a proof. Distributed add/remove is therefore refused by
/// <see cref="PrivacyPlan"/>; central add/remove is priced with sensitivity Delta2 and may use amplification when the
/// sample is secret (see <see cref="PrivacyPlanParameters.SampleIsSecret"/>).
/// </para>
/// </remarks>
public enum Adjacency
{
    /// <summary>One participant's data replaced by any other data; participation itself is public. The product's unit.</summary>
    ReplaceOne,

    /// <summary>One participant's update replaced by zero (it still takes part and, under distributed noise, still adds its noise share).</summary>
    ZeroOut,

    /// <summary>One client added to or removed from the population; only meaningful when the sample is secret.</summary>
    AddRemove,
}

/// <summary>The names the CLI, the ledger and the provenance record print for mechanisms and privacy units.</summary>
public static class PrivacyUnitNames
{
    /// <summary>The privacy unit of every client-level epsilon: one client's whole contribution across the rounds it takes part in.</summary>
    public const string Client = "client";

    /// <summary>The privacy unit of a record-level (DP-SGD) epsilon: one record of one holder's data, added or removed.</summary>
    public const string Record = "record";

    /// <summary>A run with both units: DP-SGD at every edge and the client-level mechanism on the aggregate.</summary>
    public const string Both = "both";

    /// <summary>The relation every record-level epsilon is stated for (Abadi et al. 2016; Opacus).</summary>
    public const Adjacency RecordAdjacency = Adjacency.AddRemove;

    /// <summary>The relation the product prices every run with (see <see cref="Adjacency"/> for why).</summary>
    public const Adjacency ProductAdjacency = Adjacency.ReplaceOne;

    /// <summary>"replace-one", "zero-out" or "add-remove".</summary>
    public static string Name(Adjacency adjacency) => adjacency switch
    {
        Adjacency.ReplaceOne => "replace-one",
        Adjacency.ZeroOut => "zero-out",
        Adjacency.AddRemove => "add-remove",
        _ => throw new ArgumentOutOfRangeException(nameof(adjacency), adjacency, "unknown adjacency"),
    };

    /// <summary>The wire names the coordinator and the edge policy already use: "distributed_skellam", "central_gaussian".</summary>
    public static string Name(PrivacyMechanism mechanism) => mechanism switch
    {
        PrivacyMechanism.DistributedSkellam => "distributed_skellam",
        PrivacyMechanism.CentralGaussian => "central_gaussian",
        _ => throw new ArgumentOutOfRangeException(nameof(mechanism), mechanism, "unknown mechanism"),
    };

    /// <summary>Parses "replace-one", "zero-out" or "add-remove"; null for anything else.</summary>
    public static Adjacency? ParseAdjacency(string? name) => name switch
    {
        "replace-one" => Adjacency.ReplaceOne,
        "zero-out" => Adjacency.ZeroOut,
        "add-remove" => Adjacency.AddRemove,
        _ => null,
    };

    /// <summary>Parses "distributed" or "distributed_skellam", "central" or "central_gaussian"; null for anything else.</summary>
    public static PrivacyMechanism? ParseMechanism(string? name) => name switch
    {
        "distributed" or "distributed_skellam" => PrivacyMechanism.DistributedSkellam,
        "central" or "central_gaussian" => PrivacyMechanism.CentralGaussian,
        _ => null,
    };
}
