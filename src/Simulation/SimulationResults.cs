using Federated.Coordinator;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Memorisation;

namespace Federated.Simulation;

/// <summary>One finished round as the simulation reports it (round 0 is the baseline before any training).</summary>
internal sealed record RoundReport(int Round, double TrainLoss, double EvalLoss, double Epsilon, int Participants, int Dropouts, double Seconds, bool Released);

/// <summary>What a memorisation audit measured: each canary's exposure with the DP run's adapter and without DP.</summary>
internal sealed record CanaryReport(string Secret, CanaryExposureResult WithDp, CanaryExposureResult WithoutDp);

/// <summary>The whole simulation's outcome; <paramref name="Privacy"/> is the plan the coordinator priced the run with (its unit and relation).</summary>
internal sealed record SimulationResult(
    string RunId,
    IReadOnlyList<RoundReport> Rounds,
    double PlannedEpsilon,
    double Epsilon,
    double Delta,
    double NoiseMultiplier,
    double ClipNorm,
    int Threshold,
    Aggregation.Privacy.PrivacyPlan Privacy,
    string AdapterSha256,
    IReadOnlyList<CanaryReport> Canaries,
    double? NoDpEvalLoss,
    double Seconds)
{
    /// <summary>Each client's record-level epsilon for the run, from its own ledger (empty unless the run was record or both).</summary>
    public IReadOnlyDictionary<string, double> RecordEpsilons { get; init; } = new Dictionary<string, double>();
}

/// <summary>What the exporter needs: the running coordinator, the run, the target folder and the engineer's channel.</summary>
internal sealed record SimulationExport(CoordinatorHost Host, string RunId, string OutDirectory, CoordinatorConnection AsEngineer, AdminService.AdminServiceClient Admin, string CaPath);
