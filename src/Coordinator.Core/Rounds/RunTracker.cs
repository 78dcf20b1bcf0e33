using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Google.Protobuf.WellKnownTypes;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// A run's plan after validation, with the noise, epsilon and privacy plan the pricing fixed for it, and (for a run
/// just started) the population's balance after its reservation.
/// </summary>
internal sealed record AcceptedRun(
    string RunId, RunPlan Plan, string Population, double NoiseMultiplier, double PlannedEpsilon, int Threshold, double BudgetEpsilon, PrivacyPlan Privacy,
    PrivacyBalance? Balance = null);

/// <summary>A run's live status, its global adapter and a signal for watchers.</summary>
internal sealed class RunTracker(AcceptedRun accepted, GlobalAdapter global, AdapterRef adapter, RunProgress startedFrom, TimeProvider time)
{
    private readonly Lock _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private RunState _state = RunState.Pending;
    private string _detail = "";
    private int _round = startedFrom.LastRound;
    private int _selected;
    private int _released = startedFrom.ReleasedRounds;
    private int _failed;
    private SecAggRound? _live;
    private RoundStage _lastStage = startedFrom.LastRound == 0 ? RoundStage.Unspecified : RoundStage.Failed;
    private DateTimeOffset _updatedAt = time.GetUtcNow();

    public AcceptedRun Accepted { get; } = accepted;

    /// <summary>Where this process took the run up: nothing for a new run, the stored progress for a resumed one.</summary>
    public RunProgress StartedFrom { get; } = startedFrom;

    public GlobalAdapter Global { get; } = global;

    public AdapterRef Adapter { get; private set; } = adapter;

    public double EpsilonSpent { get; private set; } = startedFrom.EpsilonSpent;

    public CancellationTokenSource Abort { get; } = new();

    public string? AbortReason { get; set; }

    public Task? Loop { get; set; }

    public Task Changed
    {
        get
        {
            lock (_gate)
            {
                return _changed.Task;
            }
        }
    }

    public void Update(RunState runState, string detail, int? round = null, int? selected = null)
    {
        lock (_gate)
        {
            _state = runState;
            _detail = detail;
            _round = round ?? _round;
            _selected = selected ?? _selected;
            Signal();
        }
    }

    /// <summary>What the run waits for before its next round can open (too few clients online), as the status detail.</summary>
    public void Waiting(string detail)
    {
        lock (_gate)
        {
            _detail = detail;
            Signal();
        }
    }

    /// <summary>A round opened: its stage and reports now show in the status, and each of its steps wakes watchers.</summary>
    public void Begin(SecAggRound round, int number, int selected)
    {
        round.Progress = OnRoundProgress;
        lock (_gate)
        {
            _state = RunState.Running;
            _detail = "";
            _round = number;
            _selected = selected;
            _live = round;
            Signal();
        }
    }

    /// <summary>A Poisson round drew too few clients and never opened.</summary>
    public void Skipped(int number, int selected)
    {
        lock (_gate)
        {
            _state = RunState.Running;
            _round = number;
            _selected = selected;
            _live = null;
            _lastStage = RoundStage.Failed;
            _failed++;
            Signal();
        }
    }

    /// <summary>The live round ended without a release (a released round ends through <see cref="Released"/>).</summary>
    public void End(RoundStage stage)
    {
        lock (_gate)
        {
            _live = null;
            _lastStage = stage;
            _failed += stage == RoundStage.Failed ? 1 : 0;
            Signal();
        }
    }

    public void Released(AdapterRef adapter, double epsilonAfter)
    {
        lock (_gate)
        {
            Adapter = adapter;
            EpsilonSpent = epsilonAfter;
            _released++;
            _live = null;
            _lastStage = RoundStage.Completed;
            Signal();
        }
    }

    public RunStatus Snapshot()
    {
        RunStatus status;
        SecAggRound? live;
        lock (_gate)
        {
            live = _live;
            status = new RunStatus
            {
                RunId = Accepted.RunId,
                State = _state,
                CurrentRound = (uint)_round,
                PlannedRounds = Accepted.Plan.Rounds,
                Stage = _lastStage,
                Selected = (uint)_selected,
                EpsilonSpent = EpsilonSpent,
                EpsilonBudget = Accepted.BudgetEpsilon,
                Delta = Accepted.Plan.Delta,
                PrivacyUnit = Accepted.Privacy.PrivacyUnit,
                Adjacency = Accepted.Privacy.AdjacencyName,
                Detail = _detail,
                UpdatedAt = Timestamp.FromDateTimeOffset(_updatedAt),
                AdapterSha256 = Adapter.Sha256,
                ReleasedRounds = (uint)_released,
                FailedRounds = (uint)_failed,
            };
            RunPricing.DescribeUnits(status, Accepted.Plan);
        }
        if (live is not null)
        {
            // Read outside _gate: the round calls OnRoundProgress under its own lock, so the two locks never nest the other way.
            (RoundStage stage, int reported) = live.StageReport();
            status.Stage = stage;
            status.Reported = (uint)reported;
            (IReadOnlyList<string> waiting, DateTimeOffset? deadline) = live.Waiting();
            status.WaitingFor.AddRange(waiting);
            if (deadline is { } d)
            {
                status.StageDeadline = Timestamp.FromDateTimeOffset(d);
            }
        }
        return status;
    }

    private void OnRoundProgress()
    {
        lock (_gate)
        {
            Signal();
        }
    }

    // Called under _gate.
    private void Signal()
    {
        _updatedAt = time.GetUtcNow();
        _changed.TrySetResult();
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
