using System.Globalization;
using Federated.Coordinator.Reports;

namespace Federated.Simulation;

/// <summary>
/// The simulation's run report, written next to its adapter folder: the same report.html and plots as 'run report', plus
/// the held-out loss of each round's global adapter, which only the simulation measures (it holds every client's held-out split).
/// </summary>
internal static class SimulationReport
{
    /// <summary>The report folder beside <paramref name="adapterDirectory"/>: "DIR.report".</summary>
    public static string DirectoryFor(string adapterDirectory) => adapterDirectory.TrimEnd(Path.DirectorySeparatorChar) + ".report";

    public static RunReport Create(SimulationResult result, SimulationOptions options)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(options);
        ReportRound[] rounds = [.. result.Rounds.Select(r => new ReportRound(
            r.Round,
            r.Released ? ReportRoundOutcome.Released : ReportRoundOutcome.Failed,
            Selected: r.Participants + r.Dropouts,
            // Round 0 is the baseline before any training: nobody was selected.
            Survivors: r.Released && r.Round > 0 ? r.Participants : null,
            // The simulation's clients never decline; a client that did not contribute is a dropout.
            Declined: null,
            EpsilonAfter: r.Released ? r.Epsilon : null,
            HeldOutLoss: double.IsFinite(r.EvalLoss) ? r.EvalLoss : null))];
        int released = result.Rounds.Count(r => r.Round > 0 && r.Released);
        return new RunReport(
            result.RunId,
            $"Simulation report: {result.RunId}",
            [
                ("state", "completed"),
                ("rounds released", $"{released} of {options.Rounds} planned"),
                ("clients", options.Clients.ToString(CultureInfo.InvariantCulture)),
                ("privacy unit", options.PrivacyUnit),
                ("epsilon spent", options.ClientLevel
                    ? $"{RunReportWriter.Number(result.Epsilon)} (planned {RunReportWriter.Number(result.PlannedEpsilon)}) "
                        + RunReportWriter.StatedFor(result.Delta, result.Privacy.PrivacyUnit, result.Privacy.AdjacencyName)
                    : "none client-level: a record-only run adds no client-level noise"),
                ("mechanism", (options.ClientLevel
                        ? $"distributed Skellam under SecAgg+, noise multiplier {RunReportWriter.Number(result.NoiseMultiplier)}, clip norm {RunReportWriter.Number(result.ClipNorm)}, threshold {result.Threshold}"
                        : $"SecAgg+ with no client-level noise, threshold {result.Threshold}")
                    + (options.RecordLevel ? $"; DP-SGD at every client, noise multiplier {RunReportWriter.Number(options.RecordNoise)}, clip {RunReportWriter.Number(options.RecordClip)}, expected batch {options.RecordBatch}" : "")),
                ("record epsilon", options.RecordLevel && result.RecordEpsilons.Count > 0
                    ? $"{RunReportWriter.Number(result.RecordEpsilons.Values.Max())} at delta {RunReportWriter.Number(result.Delta)}, the largest of the clients' own ledgers"
                    : ""),
                ("local training", $"{options.LocalSteps} steps per round at learning rate {RunReportWriter.Number(options.LearningRate)}, LoRA rank {options.Rank} on {string.Join(", ", options.Targets)}"),
                ("adapter sha256", result.AdapterSha256),
                ("report written", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture)),
            ],
            rounds,
            [
                "Epsilon after each round: the coordinator's privacy ledger, read by the simulation's officer.",
                "Participation: clients selected, survivors (summed into the release, as the ledger records) and dropouts (the rest).",
            ],
            "Held-out loss: the global adapter after each round on every client's own held-out text, averaged over clients; round 0 "
            + "is the initial adapter before any training. A real coordinator never holds this number: only the simulation, which "
            + "plays every client, can measure it.");
    }
}
