using Federated.Protos.V1;

namespace Federated.Coordinator.Rounds;

/// <summary>The lower-case names of run states and noise mechanisms, as provenance.json and the admin CLI (text and --json) show them.</summary>
internal static class WireNames
{
    public static string State(RunState state) => state switch
    {
        RunState.Pending => "pending",
        RunState.Running => "running",
        RunState.Completed => "completed",
        RunState.Aborted => "aborted",
        RunState.Failed => "failed",
        _ => "unspecified",
    };

    public static string Mechanism(NoiseMechanism mechanism) => mechanism switch
    {
        NoiseMechanism.DistributedSkellam => "distributed_skellam",
        NoiseMechanism.DistributedDiscreteGaussian => "distributed_discrete_gaussian",
        NoiseMechanism.CentralGaussian => "central_gaussian",
        _ => "unspecified",
    };
}
