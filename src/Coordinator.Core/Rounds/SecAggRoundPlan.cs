namespace Federated.Coordinator.Rounds;

/// <summary>What the coordinator fixes for one SecAgg+ round: who takes part (by identity) and the protocol's sizes and deadlines.</summary>
internal sealed record SecAggRoundPlan(
    string RunId,
    int Round,
    IReadOnlyList<string> Participants,
    int VectorLength,
    int Bits,
    int Degree,
    int Threshold,
    TimeSpan StageTimeout,
    int MaxChunkBytes = 1 << 20);
