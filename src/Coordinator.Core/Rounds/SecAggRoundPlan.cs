namespace Federated.Coordinator.Rounds;

/// <summary>What the coordinator fixes for one SecAgg+ round: who takes part (by identity) and the protocol's sizes and deadlines.</summary>
/// <param name="Degree">k: neighbours per participant (Participants.Count - 1: the complete graph).</param>
/// <param name="Threshold">t: the Shamir threshold on each neighbourhood of k + 1.</param>
/// <param name="MinSurvivors">The release threshold: the fewest survivors whose sum the round releases, which the noise
/// is priced for; null means <paramref name="Threshold"/> (the complete graph's rule).</param>
/// <param name="TrainingAllowance">Time for local training, added to the first stage's deadline (and so to every later
/// one): the run's local steps times the coordinator's allowance per step, so a long round is not cut at a fixed minute.</param>
internal sealed record SecAggRoundPlan(
    string RunId,
    int Round,
    IReadOnlyList<string> Participants,
    int VectorLength,
    int Bits,
    int Degree,
    int Threshold,
    TimeSpan StageTimeout,
    int MaxChunkBytes = 1 << 20,
    int? MinSurvivors = null,
    TimeSpan TrainingAllowance = default)
{
    /// <summary>The fewest survivors whose sum is released: below it the round fails even where the graph could unmask.</summary>
    public int ReleaseThreshold => MinSurvivors ?? Threshold;
}
