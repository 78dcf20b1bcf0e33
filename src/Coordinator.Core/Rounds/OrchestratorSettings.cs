namespace Federated.Coordinator.Rounds;

/// <summary>The orchestrator's adjustable limits (tests shorten them; production keeps the defaults).</summary>
internal sealed class OrchestratorSettings
{
    /// <summary>Per-stage timeout of each SecAgg+ round (training happens before advertising keys).</summary>
    public TimeSpan StageTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Local training time allowed per local step, added to a round's first deadline (local steps times it).</summary>
    public TimeSpan TrainingTimePerStep { get; set; } = TimeSpan.FromSeconds(CoordinatorOptions.DefaultTrainingSecondsPerStep);

    /// <summary>The clock of each round's stage deadlines; null: the coordinator's (tests drive it with a fake clock).</summary>
    public TimeProvider? RoundClock { get; set; }

    /// <summary>How long a run waits for enough available clients before it fails.</summary>
    public TimeSpan SelectionTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>A Poisson-sampled run ends FAILED after this many rounds in a row drew fewer than t (or more than the cap) clients.</summary>
    public int MaxSkippedRoundsInARow { get; set; } = 100;
}
