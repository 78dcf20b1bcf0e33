namespace Federated.Coordinator.Reports;

/// <summary>
/// One round as a report shows it. <paramref name="Survivors"/> is null where the round released nothing (the coordinator
/// records no survivor count for a failed round) or has not ended; <paramref name="Declined"/> is null where declines are
/// not told apart from dropouts; <paramref name="HeldOutLoss"/> is null where nobody measured it.
/// </summary>
public sealed record ReportRound(int Round, ReportRoundOutcome Outcome, int Selected, int? Survivors, int? Declined, double? EpsilonAfter, double? HeldOutLoss)
{
    /// <summary>Selected clients that neither declined nor had their masked input summed; null while unknown.</summary>
    public int? Dropouts => Survivors is { } survivors ? Selected - survivors - (Declined ?? 0) : null;
}

/// <summary>How a round ended, as the report names it.</summary>
public enum ReportRoundOutcome
{
    Released,
    Failed,
    InProgress,
}

/// <summary>
/// What a run report holds: the run's facts as label/value pairs, its rounds in order, and the notes that say where each
/// number comes from (and why a plot is missing). Everything in it is what the coordinator (or the simulation) already holds.
/// </summary>
public sealed record RunReport(
    string RunId,
    string Title,
    IReadOnlyList<(string Label, string Value)> Facts,
    IReadOnlyList<ReportRound> Rounds,
    IReadOnlyList<string> Notes,
    string LossNote)
{
    /// <summary>Rounds with a measured held-out loss (the simulation's round 0 is the baseline before training).</summary>
    public IEnumerable<ReportRound> WithLoss => Rounds.Where(r => r.HeldOutLoss is { } loss && double.IsFinite(loss));

    /// <summary>Released rounds with the cumulative epsilon after each.</summary>
    public IEnumerable<ReportRound> Charged => Rounds.Where(r => r.Outcome == ReportRoundOutcome.Released && r.EpsilonAfter is not null && r.Round > 0);

    /// <summary>Rounds in which clients were selected (not the simulation's baseline round 0).</summary>
    public IEnumerable<ReportRound> Selections => Rounds.Where(r => r.Round > 0);
}
