using System.Collections.Concurrent;
using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Rounds;

/// <summary>A run's plan after validation, with the noise and epsilon the accountant fixed for it.</summary>
internal sealed record AcceptedRun(string RunId, RunPlan Plan, string Population, double NoiseMultiplier, double PlannedEpsilon, int Threshold, double BudgetEpsilon);

/// <summary>
/// Runs federated rounds: checks a plan against the officer's budget, then, in a background loop per run, selects
/// online clients, opens a SecAgg+ round with a signed manifest, decodes the distributed Skellam sum into the mean
/// update, applies it to the global lora_B, stores the signed adapter and charges the ledger in the same
/// transaction that records the round. A round with fewer than t survivors fails and charges nothing; the run goes on
/// until its planned number of rounds has been released. A coordinator that stops (or is killed) mid-round resumes
/// every unfinished run on its next start from the last released round (<see cref="Resume"/>).
/// </summary>
internal sealed class RunOrchestrator(
    CoordinatorState state, RoundRegistry rounds, AdapterStore adapters, CoordinatorOptions options, TimeProvider time, ILogger<RunOrchestrator> logger)
    : IAsyncDisposable
{
    /// <summary>Ring bit width of the masked sums (the DSkellam plan is calibrated so the sum does not wrap).</summary>
    public const int RingBits = 32;

    private const uint MaxRounds = 10_000;
    private const int MaxRank = 256;

    /// <summary>A run whose rounds keep failing (too few survivors, timeouts) ends FAILED after this many in a row.</summary>
    public const int MaxFailedRoundsInARow = 5;

    /// <summary>Most clients in one round; with Poisson sampling also the cap that sizes every round's scale.</summary>
    public const int MaxClientsPerRound = 1000;

    /// <summary>How a round ended.</summary>
    private enum RoundOutcome
    {
        Released,
        Failed,
        Skipped,
    }

    private readonly ConcurrentDictionary<string, RunTracker> _runs = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _shutdown = new();

    /// <summary>Per-stage timeout of each SecAgg+ round (training happens before advertising keys).</summary>
    public TimeSpan StageTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a run waits for enough available clients before it fails.</summary>
    public TimeSpan SelectionTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>A Poisson-sampled run ends FAILED after this many rounds in a row drew fewer than t (or more than the cap) clients.</summary>
    public int MaxSkippedRoundsInARow { get; set; } = 100;

    /// <summary>Validates the plan, prices it with the accountant, refuses it when the budget cannot afford it, persists it and starts its loop.</summary>
    public AcceptedRun Start(RunPlan plan, string actor)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        Validate(plan);
        string population = plan.Population.Length == 0 ? CoordinatorState.DefaultPopulation : plan.Population;
        BudgetRecord budget = state.GetBudget(population)
            ?? throw new RpcException(new Status(StatusCode.FailedPrecondition, $"no budget is set for population '{population}'; an officer sets one with 'budget set'"));
        if (plan.Delta > budget.Delta)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"the plan's delta {plan.Delta} exceeds the budget's delta {budget.Delta}"));
        }
        int n = MaxClients(plan);
        int threshold = Threshold(plan);
        GlobalAdapter adapter;
        try
        {
            adapter = GlobalAdapter.Create(plan.BaseModel, new LoraSettings(
                Rank: (int)plan.LoraRank, Alpha: 2.0 * plan.LoraRank,
                TargetModules: plan.TargetModules.Count == 0 ? null : [.. plan.TargetModules],
                InitSeed: BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & long.MaxValue, FreezeA: true));
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"base model '{plan.BaseModel}' cannot be used: {ex.Message}"));
        }
        double z, planned;
        try
        {
            // Under Poisson sampling the scale is sized for the cap. Distributed Skellam claims no amplification (this
            // codebase has no subsampled Skellam RDP), so each released round is charged in full whatever the rate
            // (conservative); the central Gaussian uses the subsampled Gaussian RDP at the rate (see Epsilon).
            z = plan.NoiseMultiplier > 0 ? plan.NoiseMultiplier : NoiseForTarget(plan, adapter.BDimension, n, threshold);
            planned = Epsilon(plan, RoundPlan(plan, adapter.BDimension, n, threshold, z), z, (int)plan.Rounds);
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the plan cannot be calibrated for {n} clients of {adapter.BDimension} values: {ex.Message.Split(" (Parameter")[0]}"));
        }
        double remaining = budget.Epsilon - budget.EpsilonSpent;
        if (planned > remaining)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"the plan needs epsilon {planned:G6} over {plan.Rounds} rounds but population '{population}' has {remaining:G6} left of its budget {budget.Epsilon:G6} (spent {budget.EpsilonSpent:G6})"));
        }
        string runId = "run-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
        byte[] initial = adapter.Serialize();
        string sha = adapters.Put(initial, runId, 0);
        state.CreateRun(runId, plan.ToByteArray(), population, planned, z, sha, actor);
        var accepted = new AcceptedRun(runId, plan, population, z, planned, threshold, budget.Epsilon);
        var tracker = new RunTracker(accepted, adapter, new AdapterRef { Sha256 = sha, SizeBytes = (ulong)initial.Length }, new RunProgress(0, 0, 0), time);
        Launch(tracker);
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
        foreach (RunRecord record in state.ListUnfinishedRuns())
        {
            if (_runs.ContainsKey(record.RunId))
            {
                continue;
            }
            IReadOnlyList<int> interrupted = state.FailInterruptedRounds(record.RunId, "the coordinator stopped during this round; it released nothing and charged nothing");
            foreach (int round in interrupted)
            {
                OrchestratorLog.RoundInterrupted(logger, record.RunId, round);
            }
            try
            {
                RunPlan plan = RunPlan.Parser.ParseFrom(record.Plan);
                BudgetRecord budget = state.GetBudget(record.Population)
                    ?? throw new InvalidDataException($"population '{record.Population}' has no budget any more");
                GlobalAdapter adapter = GlobalAdapter.Deserialize(ReadAdapter(record.AdapterSha256));
                RunProgress progress = state.GetRunProgress(record.RunId);
                var accepted = new AcceptedRun(record.RunId, plan, record.Population, record.NoiseMultiplier, record.PlannedEpsilon, Threshold(plan), budget.Epsilon);
                var tracker = new RunTracker(accepted, adapter, new AdapterRef { Sha256 = record.AdapterSha256, SizeBytes = (ulong)ReadAdapterSize(record.AdapterSha256) }, progress, time);
                Launch(tracker);
                resumed.Add(record.RunId);
                OrchestratorLog.RunResumed(logger, record.RunId, progress.ReleasedRounds, (int)plan.Rounds, record.AdapterSha256);
            }
            catch (Exception ex) when (ex is InvalidDataException or InvalidProtocolBufferException or IOException or ArgumentException or RpcException)
            {
                // A run that cannot be resumed ends visibly instead of being silently dropped.
                string detail = $"could not resume after a restart: {ex.Message}";
                state.EndRun(record.RunId, RunState.Failed, detail, "coordinator");
                OrchestratorLog.RunFailed(logger, record.RunId, detail);
            }
        }
        return resumed;
    }

    /// <summary>The run's live status; for a run this process does not drive (ended before a restart), its stored one.</summary>
    public RunStatus? Status(string runId)
    {
        if (_runs.TryGetValue(runId, out RunTracker? run))
        {
            return run.Snapshot();
        }
        if (state.GetRun(runId) is not { } record)
        {
            return null;
        }
        RunProgress progress = state.GetRunProgress(runId);
        uint planned = 0;
        try
        {
            planned = RunPlan.Parser.ParseFrom(record.Plan).Rounds;
        }
        catch (InvalidProtocolBufferException)
        {
            // A plan this version cannot read still has a state to report.
        }
        return new RunStatus
        {
            RunId = record.RunId,
            State = record.State,
            CurrentRound = (uint)record.CurrentRound,
            PlannedRounds = planned,
            Stage = record.CurrentRound == 0 ? RoundStage.Unspecified : state.GetRoundStage(runId, record.CurrentRound) ?? RoundStage.Unspecified,
            EpsilonSpent = progress.EpsilonSpent,
            EpsilonBudget = state.GetBudget(record.Population)?.Epsilon ?? 0,
            Detail = record.Detail,
            UpdatedAt = Timestamp.FromDateTimeOffset(record.UpdatedAt),
            AdapterSha256 = record.AdapterSha256,
        };
    }

    /// <summary>Whether this process drives the run (started or resumed it here), so its status can still change.</summary>
    public bool Drives(string runId) => _runs.ContainsKey(runId);

    /// <summary>Completes with the next status after <paramref name="version"/>; the caller re-reads <see cref="Status"/>.</summary>
    public Task WaitForChangeAsync(string runId, CancellationToken cancellationToken) =>
        _runs.TryGetValue(runId, out RunTracker? run) ? run.Changed.WaitAsync(cancellationToken) : Task.CompletedTask;

    /// <summary>The current global adapter of a run.</summary>
    public AdapterRef? CurrentAdapter(string runId) => _runs.TryGetValue(runId, out RunTracker? run) ? run.Adapter : null;

    /// <summary>Aborts a run: its current round releases nothing and charges nothing.</summary>
    public async Task<RunStatus> AbortAsync(string runId, string reason, string actor)
    {
        if (!_runs.TryGetValue(runId, out RunTracker? run))
        {
            throw state.GetRun(runId) is { } ended
                ? new RpcException(new Status(StatusCode.FailedPrecondition, $"run '{runId}' has already ended ({ended.State})"))
                : new RpcException(new Status(StatusCode.NotFound, $"run '{runId}' is not known to this coordinator"));
        }
        if (run.Loop is { IsCompleted: true })
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"run '{runId}' has already ended ({run.Snapshot().State})"));
        }
        run.AbortReason = $"aborted by {actor}: {reason}";
        await run.Abort.CancelAsync();
        if (run.Loop is not null)
        {
            await run.Loop;
        }
        return run.Snapshot();
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
                switch (await RoundAsync(run, number, released, cancellationToken))
                {
                    case RoundOutcome.Released:
                        released++;
                        (failedInARow, skippedInARow) = (0, 0);
                        break;
                    case RoundOutcome.Failed when ++failedInARow >= MaxFailedRoundsInARow:
                        throw new InvalidOperationException($"{failedInARow} rounds in a row failed; {released} of {accepted.Plan.Rounds} rounds were released");
                    case RoundOutcome.Skipped when ++skippedInARow >= MaxSkippedRoundsInARow:
                        throw new InvalidOperationException($"{skippedInARow} rounds in a row sampled too few (or too many) clients; {released} of {accepted.Plan.Rounds} rounds were released");
                    case RoundOutcome.Skipped:
                        // The pool changes at the heartbeat's pace: sampling it again at once would mostly repeat the draw.
                        await Task.Delay(TimeSpan.FromSeconds(options.HeartbeatIntervalSeconds), time, cancellationToken);
                        break;
                }
            }
            run.Update(RunState.Completed, "");
            state.EndRun(accepted.RunId, RunState.Completed, $"{released} of {accepted.Plan.Rounds} rounds released", "coordinator");
        }
        catch (OperationCanceledException) when (run.AbortReason is null)
        {
            // The coordinator is shutting down: the run stays RUNNING in the state file and resumes on the next start.
            run.Update(RunState.Failed, "the coordinator shut down; the run resumes when it starts again");
        }
        catch (OperationCanceledException)
        {
            run.Update(RunState.Aborted, run.AbortReason!);
            state.EndRun(accepted.RunId, RunState.Aborted, run.AbortReason!, "coordinator");
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // A background loop has no caller to throw to: whatever stopped it is recorded, so watchers see the end.
            run.Update(RunState.Failed, ex.Message);
            state.EndRun(accepted.RunId, RunState.Failed, ex.Message, "coordinator");
            OrchestratorLog.RunFailed(logger, accepted.RunId, ex.Message);
        }
    }

    /// <summary>One round: released (and charged), failed (nothing released or charged) or skipped (too few sampled).</summary>
    private async Task<RoundOutcome> RoundAsync(RunTracker run, int number, int completedBefore, CancellationToken cancellationToken)
    {
        AcceptedRun accepted = run.Accepted;
        RunPlan plan = accepted.Plan;
        int n = MaxClients(plan);
        IReadOnlyList<string> selected;
        if (plan.SamplingRate > 0)
        {
            selected = await SampleAsync(plan.SamplingRate, accepted.Threshold, cancellationToken);
            if (selected.Count < accepted.Threshold || selected.Count > MaxClientsPerRound)
            {
                // Decided on the sample's size alone, before anyone trains: nothing is released and nothing charged.
                string reason = $"Poisson sampling at rate {plan.SamplingRate} drew {selected.Count} clients; a round needs {accepted.Threshold}..{MaxClientsPerRound}";
                state.StartRound(accepted.RunId, number, selected.Order(StringComparer.Ordinal).Select((c, i) => (c, i + 1)).ToDictionary(p => p.c, p => p.Item2), run.Adapter.Sha256);
                state.FailRound(accepted.RunId, number, reason);
                run.Skipped(number, selected.Count);
                OrchestratorLog.RoundSkipped(logger, accepted.RunId, number, reason);
                return RoundOutcome.Skipped;
            }
        }
        else
        {
            selected = await SelectAsync(n, cancellationToken);
        }
        DSkellamPlan dskellam = RoundPlan(plan, run.Global.BDimension, n, accepted.Threshold, accepted.NoiseMultiplier);
        double epsilonAfter = Epsilon(plan, dskellam, accepted.NoiseMultiplier, completedBefore + 1);
        bool central = plan.Mechanism == NoiseMechanism.CentralGaussian;
        byte[] rotationSeed = RandomNumberGenerator.GetBytes(32);
        var dp = new DpParameters
        {
            Mechanism = plan.Mechanism,
            ClipNorm = plan.ClipNorm,
            NoiseMultiplier = accepted.NoiseMultiplier,
            Scale = dskellam.Scale,
            PerClientVariance = 2 * dskellam.LocalSkellamMu,
            RotationSeed = ByteString.CopyFrom(rotationSeed),
            Delta = plan.Delta,
            MaxClients = (uint)n,
        };
        SecAggRound round = rounds.Start(new SecAggRoundPlan(accepted.RunId, number, selected, dskellam.PaddedDimension, RingBits,
            Degree: selected.Count - 1, Threshold: accepted.Threshold, StageTimeout: StageTimeout, Dp: dp, GlobalAdapter: run.Adapter,
            LocalSteps: (int)plan.LocalSteps, LearningRate: plan.LearningRate, EpsilonAfterRound: epsilonAfter));
        try
        {
            state.StartRound(accepted.RunId, number, round.Indices, run.Adapter.Sha256);
            run.Begin(round, number, selected.Count);
            uint[] sum;
            try
            {
                sum = await round.Sum.WaitAsync(cancellationToken);
            }
            catch (RpcException ex)
            {
                // Too few survivors, a timeout or an abort: nothing is released and nothing is charged.
                state.FailRound(accepted.RunId, number, ex.Status.Detail);
                run.End(RoundStage.Failed);
                OrchestratorLog.RoundFailed(logger, accepted.RunId, number, ex.Status.Detail);
                return RoundOutcome.Failed;
            }
            IReadOnlyList<int> survivors = round.Survivors;
            float[] mean = new DSkellamDecoder(dskellam, rotationSeed).DecodeSum(sum);
            if (central)
            {
                // Central DP: N(0, (z Delta)^2) per coordinate on the unmasked sum (the Gaussian mechanism, Dwork and Roth 2014,
                // Thm A.1; RDP alpha / (2 z^2), Mironov 2017), Delta being a client's rounded contribution bound, just above C.
                GaussianMechanism.AddNoise(mean, dskellam.DecodedL2Sensitivity, accepted.NoiseMultiplier);
            }
            for (int i = 0; i < mean.Length; i++)
            {
                mean[i] /= survivors.Count;
            }
            run.Global.ApplyMeanUpdate(mean.AsSpan(0, run.Global.BDimension));
            byte[] bytes = run.Global.Serialize();
            string sha = adapters.Put(bytes, accepted.RunId, number);
            foreach ((string clientId, int index) in round.Indices)
            {
                state.SetParticipantStatus(accepted.RunId, number, clientId, survivors.Contains(index) ? "uploaded" : "dropped");
            }
            LedgerRecord charged = state.CompleteRound(new LedgerRecord(0, accepted.RunId, number, accepted.Population, epsilonAfter,
                epsilonAfter - run.EpsilonSpent, plan.Delta, (int)plan.Mechanism, accepted.NoiseMultiplier, plan.ClipNorm,
                survivors.Count, time.GetUtcNow()), sha);
            run.Released(new AdapterRef { Sha256 = sha, SizeBytes = (ulong)bytes.Length }, charged.EpsilonAfter);
            return RoundOutcome.Released;
        }
        catch (OperationCanceledException)
        {
            round.Abort(run.AbortReason ?? "the coordinator is shutting down");
            state.FailRound(accepted.RunId, number, run.AbortReason ?? "the coordinator shut down");
            run.End(RoundStage.Failed);
            throw;
        }
        finally
        {
            rounds.Finish(round);
        }
    }

    /// <summary>
    /// Poisson sampling: once at least <paramref name="threshold"/> clients are available (fewer could never make a
    /// round), each available client is included independently with probability <paramref name="rate"/>.
    /// </summary>
    private async Task<IReadOnlyList<string>> SampleAsync(double rate, int threshold, CancellationToken cancellationToken)
    {
        string[] pool = await AvailableAsync(threshold, cancellationToken);
        return PoissonSample(pool, rate);
    }

    /// <summary>Each member kept independently with probability <paramref name="rate"/>: a uniform 53-bit draw from the CSPRNG below the rate.</summary>
    internal static IReadOnlyList<string> PoissonSample(IReadOnlyList<string> pool, double rate)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (!(rate > 0 && rate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), rate, "the sampling rate must be in (0, 1]");
        }
        Span<byte> draw = stackalloc byte[8];
        var sample = new List<string>();
        foreach (string client in pool)
        {
            RandomNumberGenerator.Fill(draw);
            double u = (BitConverter.ToUInt64(draw) >> 11) * (1.0 / (1UL << 53));
            if (u < rate)
            {
                sample.Add(client);
            }
        }
        return sample;
    }

    /// <summary>A uniformly random set of <paramref name="count"/> clients among those available now (CSPRNG shuffle).</summary>
    private async Task<IReadOnlyList<string>> SelectAsync(int count, CancellationToken cancellationToken)
    {
        string[] online = await AvailableAsync(count, cancellationToken);
        RandomNumberGenerator.Shuffle(online.AsSpan());
        return online[..count];
    }

    /// <summary>The clients available now (seen within three heartbeats, not already invited), once there are at least <paramref name="count"/>.</summary>
    private async Task<string[]> AvailableAsync(int count, CancellationToken cancellationToken)
    {
        TimeSpan window = TimeSpan.FromSeconds(3 * options.HeartbeatIntervalSeconds);
        DateTimeOffset giveUp = time.GetUtcNow() + SelectionTimeout;
        while (true)
        {
            string[] online = [.. state.ListClients(window).Where(c => c.Available && rounds.InvitationFor(c.ClientId) is null).Select(c => c.ClientId)];
            if (online.Length >= count)
            {
                return online;
            }
            if (time.GetUtcNow() > giveUp)
            {
                throw new TimeoutException($"only {online.Length} of the {count} clients a round needs were available within {SelectionTimeout}");
            }
            await Task.Delay(TimeSpan.FromMilliseconds(200), time, cancellationToken);
        }
    }

    /// <summary>The stored adapter's bytes, checked against their hash (a damaged file must not become the global model).</summary>
    private byte[] ReadAdapter(string sha256)
    {
        if (adapters.Open(sha256) is not { } stored)
        {
            throw new InvalidDataException($"the run's adapter {sha256} is not stored (or not released) on this coordinator");
        }
        byte[] content;
        using (Stream stream = stored.Content)
        {
            content = new byte[stored.SizeBytes];
            stream.ReadExactly(content);
        }
        if (!Convert.ToHexStringLower(SHA256.HashData(content)).Equals(sha256, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"the stored adapter {sha256} does not match its hash");
        }
        return content;
    }

    private long ReadAdapterSize(string sha256) => state.GetAdapter(sha256)?.SizeBytes ?? throw new InvalidDataException($"adapter {sha256} is not recorded");

    /// <summary>The most clients a round of the plan can have: clients_per_round, or the cap when clients are Poisson-sampled.</summary>
    private static int MaxClients(RunPlan plan) => plan.SamplingRate > 0 ? MaxClientsPerRound : (int)plan.ClientsPerRound;

    /// <summary>The SecAgg+ threshold t: min_survivors (required with Poisson sampling), or about two thirds of the clients per round.</summary>
    private static int Threshold(RunPlan plan)
    {
        if (plan.SamplingRate > 0)
        {
            return plan.MinSurvivors is >= 2 and <= MaxClientsPerRound
                ? (int)plan.MinSurvivors
                : throw new RpcException(new Status(StatusCode.InvalidArgument, $"min_survivors {plan.MinSurvivors} is invalid with sampling_rate: use 2..{MaxClientsPerRound}"));
        }
        int n = (int)plan.ClientsPerRound;
        int threshold = plan.MinSurvivors == 0 ? Math.Max(2, (n * 2 + 2) / 3) : (int)plan.MinSurvivors;
        if (threshold < 2 || threshold > n)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"min_survivors {threshold} is invalid: use 2..clients_per_round ({n})"));
        }
        return threshold;
    }

    /// <summary>The round's quantizer: distributed Skellam with the run's noise, or (central Gaussian) the same rounding without client noise.</summary>
    private static DSkellamPlan RoundPlan(RunPlan plan, int dimension, int clients, int threshold, double noiseMultiplier) =>
        DSkellamPlan.Calibrate(new DSkellamParameters(dimension, RingBits, plan.ClipNorm,
            plan.Mechanism == NoiseMechanism.CentralGaussian ? 0 : noiseMultiplier, clients, threshold));

    /// <summary>
    /// Epsilon after <paramref name="rounds"/> released rounds, RDP composed additively and converted as in Opacus.
    /// Distributed Skellam: the Skellam RDP of the calibrated plan (Agarwal et al. 2021, Thm 3.5), no amplification.
    /// Central Gaussian: the Gaussian RDP, subsampled at the Poisson rate when clients are sampled (Mironov, Talwar and
    /// Zhang 2019), with q = 1 (no amplification) for a fixed count.
    /// </summary>
    private static double Epsilon(RunPlan plan, DSkellamPlan quantizer, double noiseMultiplier, int rounds)
    {
        double[] rdp = plan.Mechanism == NoiseMechanism.CentralGaussian
            ? RdpAnalysis.SubsampledGaussian(plan.SamplingRate > 0 ? plan.SamplingRate : 1.0, noiseMultiplier, RdpOrders.Default)
            : quantizer.RdpPerRound(RdpOrders.Default);
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] *= rounds;
        }
        return RdpAnalysis.Epsilon(RdpOrders.Default, rdp, plan.Delta).Epsilon;
    }

    /// <summary>Smallest noise multiplier (bisection to 1e-4 relative) whose planned epsilon meets target_epsilon.</summary>
    private static double NoiseForTarget(RunPlan plan, int dimension, int clients, int threshold)
    {
        double low = 0.05, high = 100;
        if (Epsilon(plan, RoundPlan(plan, dimension, clients, threshold, high), high, (int)plan.Rounds) > plan.TargetEpsilon)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"target_epsilon {plan.TargetEpsilon} cannot be met with noise multiplier <= {high}"));
        }
        while ((high - low) / high > 1e-4)
        {
            double mid = (low + high) / 2;
            if (Epsilon(plan, RoundPlan(plan, dimension, clients, threshold, mid), mid, (int)plan.Rounds) <= plan.TargetEpsilon)
            {
                high = mid;
            }
            else
            {
                low = mid;
            }
        }
        return high;
    }

    private static void Validate(RunPlan plan)
    {
        static RpcException Invalid(string message) => new(new Status(StatusCode.InvalidArgument, message));
        if (string.IsNullOrEmpty(plan.BaseModel) || !Directory.Exists(plan.BaseModel))
        {
            throw Invalid($"base_model '{plan.BaseModel}' is not a folder on the coordinator host");
        }
        if (plan.LoraRank is 0 or > MaxRank)
        {
            throw Invalid($"lora_rank {plan.LoraRank} is invalid: use 1..{MaxRank}");
        }
        if (plan.Rounds is 0 or > MaxRounds)
        {
            throw Invalid($"rounds {plan.Rounds} is invalid: use 1..{MaxRounds}");
        }
        if ((plan.SamplingRate != 0) == (plan.ClientsPerRound != 0))
        {
            throw Invalid($"set exactly one of clients_per_round ({plan.ClientsPerRound}) and sampling_rate ({plan.SamplingRate})");
        }
        if (plan.SamplingRate != 0 && !(plan.SamplingRate > 0 && plan.SamplingRate <= 1))
        {
            throw Invalid($"sampling_rate {plan.SamplingRate} is invalid: use a rate in (0, 1]");
        }
        if (plan.SamplingRate == 0 && plan.ClientsPerRound is < 2 or > MaxClientsPerRound)
        {
            throw Invalid($"clients_per_round {plan.ClientsPerRound} is invalid: use 2..{MaxClientsPerRound}");
        }
        if (plan.LocalSteps is 0 or > 100_000)
        {
            throw Invalid($"local_steps {plan.LocalSteps} is invalid: use 1..100000");
        }
        if (!(plan.LearningRate > 0) || !double.IsFinite(plan.LearningRate))
        {
            throw Invalid($"learning_rate {plan.LearningRate} is invalid: it must be a finite number > 0");
        }
        if (!(plan.ClipNorm > 0) || !double.IsFinite(plan.ClipNorm))
        {
            throw Invalid($"clip_norm {plan.ClipNorm} is invalid: it must be a finite number > 0");
        }
        if (plan.Mechanism is not (NoiseMechanism.DistributedSkellam or NoiseMechanism.CentralGaussian))
        {
            throw Invalid($"mechanism {plan.Mechanism} is not supported by this coordinator: use NOISE_MECHANISM_DISTRIBUTED_SKELLAM or NOISE_MECHANISM_CENTRAL_GAUSSIAN");
        }
        if (!double.IsFinite(plan.TargetEpsilon) || plan.TargetEpsilon < 0)
        {
            throw Invalid($"target_epsilon {plan.TargetEpsilon} is invalid: it must be a finite number >= 0 (0 = not set)");
        }
        if (plan.NoiseMultiplier < 0 || !double.IsFinite(plan.NoiseMultiplier) || (plan.NoiseMultiplier == 0 && !(plan.TargetEpsilon > 0)))
        {
            throw Invalid($"noise_multiplier {plan.NoiseMultiplier} is invalid: give a finite value > 0, or 0 with target_epsilon > 0");
        }
        if (!(plan.Delta > 0) || plan.Delta >= 1)
        {
            throw Invalid($"delta {plan.Delta} is invalid: it must be in (0, 1)");
        }
        if (plan.Population.Length > 64 || !plan.Population.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            throw Invalid($"population '{plan.Population}' is invalid: use 1-64 characters of A-Z a-z 0-9 . _ -");
        }
    }

    /// <summary>A run's live status, its global adapter and a signal for watchers.</summary>
    private sealed class RunTracker(AcceptedRun accepted, GlobalAdapter global, AdapterRef adapter, RunProgress startedFrom, TimeProvider time)
    {
        private readonly Lock _gate = new();
        private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private RunState _state = RunState.Pending;
        private string _detail = "";
        private int _round = startedFrom.LastRound;
        private int _selected;
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
                Signal();
            }
        }

        public void Released(AdapterRef adapter, double epsilonAfter)
        {
            lock (_gate)
            {
                Adapter = adapter;
                EpsilonSpent = epsilonAfter;
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
                    Detail = _detail,
                    UpdatedAt = Timestamp.FromDateTimeOffset(_updatedAt),
                    AdapterSha256 = Adapter.Sha256,
                };
            }
            if (live is not null)
            {
                // Read outside _gate: the round calls OnRoundProgress under its own lock, so the two locks never nest the other way.
                (RoundStage stage, int reported) = live.StageReport();
                status.Stage = stage;
                status.Reported = (uint)reported;
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
}

/// <summary>Log messages of the orchestrator (never an update's values).</summary>
internal static partial class OrchestratorLog
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "round {Round} of run {RunId} failed and released nothing: {Reason}")]
    public static partial void RoundFailed(ILogger logger, string runId, int round, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "round {Round} of run {RunId} skipped: {Reason}")]
    public static partial void RoundSkipped(ILogger logger, string runId, int round, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "run {RunId} failed: {Reason}")]
    public static partial void RunFailed(ILogger logger, string runId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "round {Round} of run {RunId} was in progress when the coordinator stopped; it is recorded as failed (nothing released, nothing charged)")]
    public static partial void RoundInterrupted(ILogger logger, string runId, int round);

    [LoggerMessage(Level = LogLevel.Information, Message = "run {RunId} resumed after {Released} of {Planned} released rounds from adapter {AdapterSha256}")]
    public static partial void RunResumed(ILogger logger, string runId, int released, int planned, string adapterSha256);
}
