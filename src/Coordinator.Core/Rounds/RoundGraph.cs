using Federated.Aggregation.SecureAggregation;

namespace Federated.Coordinator.Rounds;

/// <summary>The SecAgg+ neighbour graph a round of a given size uses: its degree k and neighbourhood threshold t.</summary>
internal static class RoundGraph
{
    /// <summary>
    /// Rounds of at least this many participants use a sparse k-regular graph. Below it the complete graph's unmasking
    /// (|dropped| x |survivors| mask expansions of d values) is cheap, and the tail bounds cannot be met with k &lt; n - 1
    /// anyway (with a 15% dropout bound and 5% corrupt neighbours the first sparse k appears near n = 50).
    /// </summary>
    public const int SparseMinParticipants = 32;

    /// <summary>
    /// The dropout fraction a sparse graph is sized to survive (at most the run's own, (n - min_survivors) / n).
    /// Production cross-device rounds lose 6 to 10% of their participants (Bonawitz et al. 2019, "Towards Federated
    /// Learning at Scale", Sec. 9); 15% leaves a margin. A round that loses more may fail to unmask (one client's holders
    /// fall below t): it then releases nothing and charges nothing, so the bound costs liveness, never privacy.
    /// </summary>
    public const double PlannedDropoutFraction = 0.15;

    /// <summary>
    /// The fraction of corrupt (coordinator-colluding) neighbours the graph threshold is secure against, with failure
    /// probability 2^-40 / n: Google FCP's SecAgg+ table assumes 5% (Bell et al. 2020, Sec. 4; see
    /// <see cref="SecAggParameters.DeriveGraphParameters"/>).
    /// </summary>
    public const double AssumedCorruptFraction = 0.05;

    /// <summary>
    /// (k, t) for <paramref name="participants"/> clients whose run releases only sums of at least
    /// <paramref name="minSurvivors"/>: the complete graph with t = min_survivors below
    /// <see cref="SparseMinParticipants"/> or where no sparse graph meets the bounds; otherwise the sparse graph of
    /// <see cref="SecAggParameters.DeriveGraphParameters"/> with t &gt; (k + 1) / 2 on each neighbourhood (the condition
    /// every participant checks), whose t is the graph's, not the release threshold (min_survivors stays the
    /// coordinator's release rule and the noise pricing's).
    /// </summary>
    public static (int Degree, int Threshold) Choose(int participants, int minSurvivors)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(participants, 2);
        ArgumentOutOfRangeException.ThrowIfLessThan(minSurvivors, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minSurvivors, participants);
        if (participants < SparseMinParticipants)
        {
            return (participants - 1, minSurvivors);
        }
        double dropout = Math.Min(PlannedDropoutFraction, (participants - minSurvivors) / (double)participants);
        (int degree, int threshold) = SecAggParameters.DeriveGraphParameters(participants, dropout, AssumedCorruptFraction, neighbourhoodMajority: true);
        return degree == participants - 1 ? (participants - 1, minSurvivors) : (degree, threshold);
    }
}
