using Federated.Protos.V1;

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

    /// <summary>
    /// When each of the four stages closes at the latest, for a round opened at <paramref name="openedAt"/>: the first
    /// also covers the manifest, the download and local training, so every deadline carries the training allowance.
    /// </summary>
    public IReadOnlyList<DateTimeOffset> Deadlines(DateTimeOffset openedAt) =>
        [.. Enumerable.Range(1, 4).Select(i => openedAt + TrainingAllowance + StageTimeout * i)];

    /// <summary>Why <paramref name="missed"/> participants missed a stage's deadline, naming the flag that sets it.</summary>
    public string MissedDeadline(RoundStage stage, string name, int missed)
    {
        if (stage == RoundStage.AdvertiseKeys && TrainingAllowance > TimeSpan.Zero)
        {
            TimeSpan total = StageTimeout + TrainingAllowance;
            return $"{missed} missed the {name} deadline of {total.TotalSeconds:0} s ({StageTimeout.TotalSeconds:0} s stage timeout plus "
                + $"{TrainingAllowance.TotalSeconds:0} s for local training); raise run start --stage-timeout, or serve --seconds-per-step for slow clients";
        }
        return $"{missed} missed the {name} deadline of {StageTimeout.TotalSeconds:0} s; raise run start --stage-timeout";
    }
}
