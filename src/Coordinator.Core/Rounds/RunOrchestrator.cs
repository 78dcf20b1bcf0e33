using System.Collections.Concurrent;
using System.Security.Cryptography;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// Runs federated rounds: accepts a plan that validates and that the officer's budget can afford (priced by
/// <see cref="RunPricing"/>), then drives each run in a background loop, one round at a time (<see cref="RoundDriver"/>),
/// until its planned number of rounds has been released. A run whose rounds keep failing ends FAILED. A coordinator that
/// stops (or is killed) mid-round resumes every unfinished run on its next start from the last released round
/// (<see cref="Resume"/>).
/// </summary>
internal sealed class RunOrchestrator : IAsyncDisposable
{
    /// <summary>A run whose rounds keep failing (too few survivors, timeouts) ends FAILED after this many in a row.</summary>
    public const int MaxFailedRoundsInARow = 5;

    private readonly CoordinatorState _state;
    private readonly AdapterStore _adapters;
    private readonly RoundRegistry _rounds;
    private readonly CoordinatorOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<RunOrchestrator> _logger;
    private readonly OrchestratorSettings _settings = new();
    private readonly RoundDriver _driver;
    private readonly ClientSelection _selection;
    private readonly ConcurrentDictionary<string, RunTracker> _runs = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _shutdown = new();

    private static readonly string s_productAdjacency = Aggregation.Privacy.PrivacyUnitNames.Name(Aggregation.Privacy.PrivacyUnitNames.ProductAdjacency);

    public RunOrchestrator(CoordinatorState state, RoundRegistry rounds, AdapterStore adapters, CoordinatorOptions options, TimeProvider time, ILogger<RunOrchestrator> logger, Telemetry.CoordinatorMetrics? metrics = null)
    {
        _state = state;
        _adapters = adapters;
        _rounds = rounds;
        _options = options;
        _time = time;
        _logger = logger;
        _settings.TrainingTimePerStep = TimeSpan.FromSeconds(options.TrainingSecondsPerStep);
        _selection = new ClientSelection(state.Clients, rounds, options, _settings, time);
        _driver = new RoundDriver(state, rounds, adapters, _selection, _settings, time, logger, metrics);
    }

    /// <summary>
    /// (online, needed): clients of the run's population available now, and how many its first round waits for (the
    /// clients per round, or the threshold under Poisson sampling), for `run start` to warn before the run sits pending.
    /// </summary>
    public (int Online, int Needed) Readiness(AcceptedRun run)
    {
        ArgumentNullException.ThrowIfNull(run);
        return (_selection.AvailableNow(run.Population), run.Plan.SamplingRate > 0 ? run.Threshold : RunPlanValidation.MaxClients(run.Plan));
    }

    /// <summary>Per-stage timeout of each SecAgg+ round (training happens before advertising keys).</summary>
    public TimeSpan StageTimeout
    {
        get => _settings.StageTimeout;
        set => _settings.StageTimeout = value;
    }

    /// <summary>The clock of each round's stage deadlines; null (the default): the coordinator's.</summary>
    public TimeProvider? RoundClock
    {
        get => _settings.RoundClock;
        set => _settings.RoundClock = value;
    }

    /// <summary>How long a run waits for enough available clients before it fails.</summary>
    public TimeSpan SelectionTimeout
    {
        get => _settings.SelectionTimeout;
        set => _settings.SelectionTimeout = value;
    }

    /// <summary>A Poisson-sampled run ends FAILED after this many rounds in a row drew fewer than t (or more than the cap) clients.</summary>
    public int MaxSkippedRoundsInARow
    {
        get => _settings.MaxSkippedRoundsInARow;
        set => _settings.MaxSkippedRoundsInARow = value;
    }

    /// <summary>Validates the plan, prices it, refuses it when the budget cannot afford it, persists it and starts its loop.</summary>
    /// <exception cref="InvalidPlanException">A field of the plan, its base model or its calibration is invalid.</exception>
    /// <exception cref="BudgetRefusedException">The population has no budget, a smaller delta, or not enough epsilon left.</exception>
    public AcceptedRun Start(RunPlan plan, string actor)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        RunPlanValidation.Validate(plan);
        string population = RunPlanValidation.Population(plan);
        BudgetRecord budget = _state.Budgets.Require(population);
        if (plan.Delta > budget.Delta)
        {
            throw new BudgetRefusedException($"the plan's delta {plan.Delta} exceeds the budget's delta {budget.Delta}");
        }
        int threshold = RunPlanValidation.Threshold(plan);
        GlobalAdapter adapter = InitialAdapter(plan);
        RunPrice price = RunPricing.Price(plan, adapter.BDimension);
        // Checked before anything is written, so a refused plan leaves no adapter behind. A record-only run charges no
        // client-level budget (each edge charges its own record-level ledger).
        if (price.ClientLevel)
        {
            _state.Budgets.RequireAffordable(population, price.Privacy);
        }
        string runId = "run-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        byte[] initial = adapter.Serialize();
        StoredAdapter stored = _adapters.Write(initial);
        Aggregation.Privacy.PrivacyBalance? balance;
        try
        {
            balance = _state.Database.Write(work =>
            {
                _state.AdapterRecords.Record(work, stored, runId, 0, "coordinator");
                _state.Runs.Create(work, runId, plan.ToByteArray(), population, price.PlannedEpsilon, price.NoiseMultiplier, stored.Sha256, actor);
                // Decided for good here, in the transaction that records the run: write transactions are serialized
                // (one connection under a lock, BEGIN IMMEDIATE), so concurrent starts each see the reservations of those
                // committed before them and the population's budget is never promised twice.
                return price.ClientLevel ? _state.Budgets.Reserve(work, runId, population, price.Privacy) : null;
            });
        }
        catch
        {
            _adapters.Discard(stored);
            throw;
        }
        var accepted = new AcceptedRun(runId, plan, population, price.NoiseMultiplier, price.PlannedEpsilon, threshold, budget.Epsilon, price.Privacy, balance);
        Launch(new RunTracker(accepted, adapter, new AdapterRef { Sha256 = stored.Sha256, SizeBytes = (ulong)initial.Length }, new RunProgress(0, 0, 0), _time));
        return accepted;
    }

    /// <summary>
    /// Picks up every run that had not ended when the coordinator last stopped (a crash included): a round that was in
    /// progress is recorded as failed (it released nothing and was never charged: charging and recording a round are
    /// one transaction), and the run continues after its last released round from that round's stored adapter.
    /// Returns the ids of the runs resumed. Called once at startup, before clients are served.
    /// </summary>
    public IReadOnlyList<string> Resume()
    {
        var resumed = new List<string>();
        foreach (RunRecord record in _state.Runs.ListUnfinished())
        {
            if (_runs.ContainsKey(record.RunId))
            {
                continue;
            }
            IReadOnlyList<int> interrupted = _state.Rounds.FailInterrupted(record.RunId, "the coordinator stopped during this round; it released nothing and charged nothing");
            foreach (int round in interrupted)
            {
                OrchestratorLog.RoundInterrupted(_logger, record.RunId, round);
            }
            try
            {
                RunPlan plan = RunPlan.Parser.ParseFrom(record.Plan);
                BudgetRecord budget = _state.Budgets.Get(record.Population)
                    ?? throw new InvalidDataException($"population '{record.Population}' has no budget any more");
                GlobalAdapter adapter = GlobalAdapter.Deserialize(_adapters.ReadVerified(record.AdapterSha256));
                RunProgress progress = _state.Runs.Progress(record.RunId);
                // Priced again from the stored plan and noise: the same parameters give the same plan, round for round.
                var privacy = Aggregation.Privacy.PrivacyPlan.Create(RunPricing.Parameters(plan, adapter.BDimension, record.NoiseMultiplier));
                var accepted = new AcceptedRun(record.RunId, plan, record.Population, record.NoiseMultiplier, record.PlannedEpsilon, RunPlanValidation.Threshold(plan),
                    budget.Epsilon, privacy);
                long size = _state.AdapterRecords.Get(record.AdapterSha256)?.SizeBytes ?? throw new InvalidDataException($"adapter {record.AdapterSha256} is not recorded");
                Launch(new RunTracker(accepted, adapter, new AdapterRef { Sha256 = record.AdapterSha256, SizeBytes = (ulong)size }, progress, _time));
                resumed.Add(record.RunId);
                OrchestratorLog.RunResumed(_logger, record.RunId, progress.ReleasedRounds, (int)plan.Rounds, record.AdapterSha256);
            }
            catch (Exception ex) when (ex is InvalidDataException or InvalidProtocolBufferException or IOException or ArgumentException or InvalidPlanException)
            {
                // A run that cannot be resumed ends visibly instead of being silently dropped.
                string detail = $"could not resume after a restart: {ex.Message}";
                _state.Runs.End(record.RunId, RunState.Failed, detail, "coordinator");
                OrchestratorLog.RunFailed(_logger, record.RunId, detail);
            }
        }
        return resumed;
    }

    /// <summary>The run's live status; for a run this process does not drive (ended before a restart), its stored one.</summary>
    public RunStatus? Status(string runId)
    {
        if (_runs.TryGetValue(runId, out RunTracker? run))
        {
            RunStatus live = run.Snapshot();
            live.ReportedRecordEpsilons.AddRange(_rounds.RecordEpsilons(runId));
            return live;
        }
        if (_state.Runs.Get(runId) is not { } record)
        {
            return null;
        }
        RunProgress progress = _state.Runs.Progress(runId);
        uint planned = 0;
        double delta = 0;
        RunPlan? stored = null;
        try
        {
            stored = RunPlan.Parser.ParseFrom(record.Plan);
            planned = stored.Rounds;
            delta = stored.Delta;
        }
        catch (InvalidProtocolBufferException)
        {
            // A plan this version cannot read still has a state to report.
        }
        var status = new RunStatus
        {
            RunId = record.RunId,
            State = record.State,
            CurrentRound = (uint)record.CurrentRound,
            PlannedRounds = planned,
            Stage = record.CurrentRound == 0 ? RoundStage.Unspecified : _state.Rounds.Stage(runId, record.CurrentRound) ?? RoundStage.Unspecified,
            EpsilonSpent = progress.EpsilonSpent,
            EpsilonBudget = _state.Budgets.Get(record.Population)?.Epsilon ?? 0,
            Delta = delta,
            PrivacyUnit = Aggregation.Privacy.PrivacyUnitNames.Client,
            // Charges recorded before the relation was stored were priced for zero-out.
            Adjacency = _state.Ledger.List(runId, null).LastOrDefault() is { } last ? last.Adjacency ?? "zero-out" : s_productAdjacency,
            Detail = record.Detail,
            UpdatedAt = Timestamp.FromDateTimeOffset(record.UpdatedAt),
            AdapterSha256 = record.AdapterSha256,
        };
        if (stored is not null)
        {
            RunPricing.DescribeUnits(status, stored);
        }
        status.ReportedRecordEpsilons.AddRange(_rounds.RecordEpsilons(runId));
        return status;
    }

    /// <summary>Whether this process drives the run (started or resumed it here), so its status can still change.</summary>
    public bool Drives(string runId) => _runs.ContainsKey(runId);

    /// <summary>Completes at the run's next change (at once for a run not driven here); the caller re-reads <see cref="Status"/>.</summary>
    public Task WaitForChangeAsync(string runId, CancellationToken cancellationToken) =>
        _runs.TryGetValue(runId, out RunTracker? run) ? run.Changed.WaitAsync(cancellationToken) : Task.CompletedTask;

    /// <summary>The current global adapter of a run.</summary>
    public AdapterRef? CurrentAdapter(string runId) => _runs.TryGetValue(runId, out RunTracker? run) ? run.Adapter : null;

    /// <summary>Aborts a run: its current round releases nothing and charges nothing.</summary>
    /// <exception cref="UnknownRunException">The run is not known here.</exception>
    /// <exception cref="RunEndedException">The run has already ended.</exception>
    public async Task<RunStatus> AbortAsync(string runId, string reason, string actor)
    {
        if (!_runs.TryGetValue(runId, out RunTracker? run))
        {
            throw _state.Runs.Get(runId) is { } ended
                ? new RunEndedException($"run '{runId}' has already ended ({ended.State})")
                : new UnknownRunException($"run '{runId}' is not known to this coordinator");
        }
        if (run.Loop is { IsCompleted: true })
        {
            throw new RunEndedException($"run '{runId}' has already ended ({run.Snapshot().State})");
        }
        run.AbortReason = $"aborted by {actor}: {reason}";
        await run.Abort.CancelAsync();
        if (run.Loop is not null)
        {
            await run.Loop;
        }
        return run.Snapshot();
    }

    /// <summary>
    /// Ends every run loop now, as a shutdown does (the runs stay RUNNING in the state for the next leader): called when
    /// the leader lease is lost, so a deposed coordinator stops driving rounds at once instead of at its host's stop.
    /// </summary>
    public void Halt()
    {
        try
        {
            _shutdown.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Already disposed: nothing runs any more.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _shutdown.CancelAsync();
        foreach (RunTracker run in _runs.Values)
        {
            if (run.Loop is not null)
            {
                await run.Loop;
            }
        }
        _shutdown.Dispose();
    }

    private void Launch(RunTracker tracker)
    {
        _runs[tracker.Accepted.RunId] = tracker;
        tracker.Loop = Task.Run(() => RunAsync(tracker, CancellationTokenSource.CreateLinkedTokenSource(_shutdown.Token, tracker.Abort.Token).Token));
    }

    private async Task RunAsync(RunTracker run, CancellationToken cancellationToken)
    {
        AcceptedRun accepted = run.Accepted;
        try
        {
            // Round numbers never repeat (an interrupted round keeps its number, failed); the run ends once the
            // planned number of rounds has been released, which is what its epsilon was priced for.
            int released = run.StartedFrom.ReleasedRounds;
            int number = run.StartedFrom.LastRound;
            int failedInARow = 0, skippedInARow = 0;
            while (released < (int)accepted.Plan.Rounds)
            {
                number++;
                RoundResult result = await _driver.RunAsync(run, number, released, cancellationToken);
                if (result.ReplayedUpTo is { } upTo && upTo > number)
                {
                    // Participants were already charged for later rounds of this run (the state was restored from an older
                    // backup, say): they refuse to upload twice for one round, so the run moves past the rounds they paid for.
                    int next = (int)Math.Min(upTo, int.MaxValue - 1);
                    OrchestratorLog.RoundsReplayed(_logger, accepted.RunId, number, upTo, next + 1);
                    number = next;
                }
                switch (result.Outcome)
                {
                    case RoundOutcome.Released:
                        released++;
                        (failedInARow, skippedInARow) = (0, 0);
                        break;
                    case RoundOutcome.Failed when ++failedInARow >= MaxFailedRoundsInARow:
                        throw new InvalidOperationException(
                            $"{failedInARow} rounds in a row failed; {released} of {accepted.Plan.Rounds} rounds were released; the last: {result.Reason ?? "no reason recorded"}");
                    case RoundOutcome.Skipped when ++skippedInARow >= _settings.MaxSkippedRoundsInARow:
                        throw new InvalidOperationException($"{skippedInARow} rounds in a row sampled too few (or too many) clients; {released} of {accepted.Plan.Rounds} rounds were released");
                    case RoundOutcome.Skipped:
                        // The pool changes at the heartbeat's pace: sampling it again at once would mostly repeat the draw.
                        await Task.Delay(TimeSpan.FromSeconds(_options.HeartbeatIntervalSeconds), _time, cancellationToken);
                        break;
                }
            }
            run.Update(RunState.Completed, "");
            _state.Runs.End(accepted.RunId, RunState.Completed, $"{released} of {accepted.Plan.Rounds} rounds released", "coordinator");
        }
        catch (OperationCanceledException) when (run.AbortReason is null)
        {
            // The coordinator is shutting down: the run stays RUNNING in the state file and resumes on the next start.
            run.Update(RunState.Failed, "the coordinator shut down; the run resumes when it starts again");
        }
        catch (OperationCanceledException)
        {
            run.Update(RunState.Aborted, run.AbortReason!);
            _state.Runs.End(accepted.RunId, RunState.Aborted, run.AbortReason!, "coordinator");
        }
        catch (StateUnavailableException ex)
        {
            // The state database was lost: nothing more can be recorded (the host is stopping). The run stays RUNNING in
            // the database, and its interrupted round (never completed, so never charged) fails when the coordinator
            // starts again.
            run.Update(RunState.Failed, ex.Message);
            OrchestratorLog.RunFailed(_logger, accepted.RunId, ex.Message);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A background loop has no caller to throw to: whatever stopped it is recorded, so watchers see the end.
            run.Update(RunState.Failed, ex.Message);
            try
            {
                _state.Runs.End(accepted.RunId, RunState.Failed, ex.Message, "coordinator");
            }
            catch (StateUnavailableException)
            {
                // Lost while recording the end: the run stays RUNNING in the database and is taken up on the next start.
            }
            OrchestratorLog.RunFailed(_logger, accepted.RunId, ex.Message);
        }
    }

    /// <summary>A fresh global adapter for the plan (A from a CSPRNG seed, B zero), shaped from the base model's config.json.</summary>
    /// <exception cref="InvalidPlanException">The base model's config.json is missing or unusable.</exception>
    private static GlobalAdapter InitialAdapter(RunPlan plan)
    {
        try
        {
            return GlobalAdapter.Create(plan.BaseModel, new LoraSettings(
                Rank: (int)plan.LoraRank, Alpha: 2.0 * plan.LoraRank,
                TargetModules: plan.TargetModules.Count == 0 ? null : [.. plan.TargetModules],
                InitSeed: BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & long.MaxValue, FreezeA: true));
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
        {
            throw new InvalidPlanException($"base model '{plan.BaseModel}' cannot be used: {ex.Message}");
        }
    }
}
