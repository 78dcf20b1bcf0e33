using System.Diagnostics;
using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Wire;
using Google.Protobuf;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Rounds;

/// <summary>How a round ended.</summary>
internal enum RoundOutcome
{
    /// <summary>Its mean update was applied, stored, released and charged.</summary>
    Released,

    /// <summary>Too few survivors, a protocol failure or a timeout: nothing released, nothing charged.</summary>
    Failed,

    /// <summary>A Poisson sample of the wrong size: the round never opened.</summary>
    Skipped,
}

/// <summary>How a round ended, and the highest round of the run a participant declined it as a replay of (null: none).</summary>
internal readonly record struct RoundResult(RoundOutcome Outcome, long? ReplayedUpTo = null, string? Reason = null);

/// <summary>
/// Drives one round of a run: selects the participants, opens a SecAgg+ round with its instructions (signed into each
/// manifest), decodes the modular sum (with the central noise added first in central mode) into the mean update, applies
/// it to the global lora_B, stores the signed adapter and completes the round (release, charge, statuses, audit) in one
/// transaction.
/// </summary>
internal sealed class RoundDriver(
    CoordinatorState state, RoundRegistry rounds, AdapterStore adapters, ClientSelection selection, OrchestratorSettings settings, TimeProvider time, ILogger logger,
    Telemetry.CoordinatorMetrics? metrics = null)
{
    /// <summary>One round: released (and charged), failed (nothing released or charged) or skipped (too few sampled).</summary>
    public async Task<RoundResult> RunAsync(RunTracker run, int number, int releasedBefore, CancellationToken cancellationToken)
    {
        AcceptedRun accepted = run.Accepted;
        RunPlan plan = accepted.Plan;
        IReadOnlyList<string> selected;
        // Until enough clients are online the status says how many there are and how many the round needs.
        string population = accepted.Population.Length == 0 ? "default" : accepted.Population;
        Action<int, int> waiting = (online, needed) => run.Waiting(online >= needed ? "" :
            $"waiting for clients: {online} of population '{population}' online and free, round {number} needs {needed}");
        if (plan.SamplingRate > 0)
        {
            selected = await selection.SampleAsync(plan.SamplingRate, accepted.Threshold, accepted.Population, cancellationToken, waiting);
            int majority = 2 * accepted.Threshold - 1;
            if (selected.Count > majority)
            {
                // Every participant checks t > (k + 1)/2 (two survivor sets told to different clients must overlap), which
                // with the complete graph is t = min_survivors above half the round: a larger sample keeps a uniformly
                // random 2t - 1 of its members (a sparse graph, from RoundGraph.SparseMinParticipants, has its own t). The price claims no amplification from the sample
                // (it is public), so trimming it changes no epsilon.
                string[] shuffled = [.. selected];
                RandomNumberGenerator.Shuffle(shuffled.AsSpan());
                selected = shuffled[..majority];
            }
            if (selected.Count < accepted.Threshold || selected.Count > RunPlanValidation.MaxClientsPerRound)
            {
                // Decided on the sample's size alone, before anyone trains: nothing is released and nothing charged.
                string reason = $"Poisson sampling at rate {plan.SamplingRate} drew {selected.Count} clients; a round needs {accepted.Threshold}..{RunPlanValidation.MaxClientsPerRound}";
                state.Rounds.Start(accepted.RunId, number, selected.Order(StringComparer.Ordinal).Select((c, i) => (c, i + 1)).ToDictionary(p => p.c, p => p.Item2), run.Adapter.Sha256);
                state.Rounds.Fail(accepted.RunId, number, reason);
                run.Skipped(number, selected.Count);
                metrics?.RoundEnded(accepted.RunId, RoundOutcome.Skipped, null);
                OrchestratorLog.RoundSkipped(logger, accepted.RunId, number, reason);
                return new RoundResult(RoundOutcome.Skipped);
            }
        }
        else
        {
            selected = await selection.SelectAsync(RunPlanValidation.MaxClients(plan), accepted.Population, cancellationToken, waiting);
        }
        PrivacyPlan privacy = accepted.Privacy;
        DSkellamPlan quantizer = privacy.Quantizer;
        bool clientLevel = PrivacyUnitWire.HasClientLevel(plan.PrivacyUnit);
        // Record-only runs spend no client-level epsilon: the aggregate carries no client noise and nothing is charged.
        double epsilonAfter = clientLevel ? privacy.EpsilonAfter(releasedBefore + 1).Epsilon : 0;
        byte[] rotationSeed = RandomNumberGenerator.GetBytes(32);
        // Everything the edge needs to price the round with the same PrivacyPlan: mechanism, z, C, delta, the relation,
        // the cap (max_clients), with the SecAgg+ threshold and ring bits and the lora_B it downloads; the scale is
        // what the plan calibrated, which the edge checks against its own.
        var dp = new DpParameters
        {
            // A record-only run encodes as under central noise (no client share) and the coordinator adds none.
            Mechanism = clientLevel ? plan.Mechanism : NoiseMechanism.CentralGaussian,
            ClipNorm = plan.ClipNorm,
            NoiseMultiplier = accepted.NoiseMultiplier,
            Scale = privacy.Scale,
            PerClientVariance = 2 * quantizer.LocalSkellamMu,
            RotationSeed = ByteString.CopyFrom(rotationSeed),
            Delta = plan.Delta,
            MaxClients = (uint)RunPlanValidation.MaxClients(plan),
            Adjacency = privacy.AdjacencyName,
            // The noise is priced for the run's min_survivors shares; with a sparse graph secagg.threshold is smaller.
            MinSurvivors = (uint)accepted.Threshold,
            // record or both: every participant trains with DP-SGD under these and charges its own record-level ledger.
            PrivacyUnit = plan.PrivacyUnit == PrivacyUnit.Unspecified ? PrivacyUnit.Client : plan.PrivacyUnit,
            RecordNoiseMultiplier = plan.RecordNoiseMultiplier,
            RecordMaxGradNorm = plan.RecordMaxGradNorm,
            RecordExpectedBatch = plan.RecordExpectedBatch,
        };
        (int degree, int graphThreshold) = RoundGraph.Choose(selected.Count, accepted.Threshold);
        SecAggRound round = rounds.Start(
            new SecAggRoundPlan(accepted.RunId, number, selected, quantizer.PaddedDimension, RunPricing.RingBits,
                Degree: degree, Threshold: graphThreshold, MinSurvivors: accepted.Threshold,
                StageTimeout: plan.StageTimeoutSeconds > 0 ? TimeSpan.FromSeconds(plan.StageTimeoutSeconds) : settings.StageTimeout,
                TrainingAllowance: settings.TrainingTimePerStep * plan.LocalSteps),
            new RoundInstructions(dp, run.Adapter, (int)plan.LocalSteps, plan.LearningRate, epsilonAfter), settings.RoundClock);
        metrics?.RoundStarted(accepted.RunId, selected.Count);
        using Activity? span = Telemetry.CoordinatorMetrics.Tracing.StartActivity("federated.round");
        span?.SetTag("federated.run.id", accepted.RunId);
        span?.SetTag("federated.round.number", number);
        span?.SetTag("federated.round.participants", selected.Count);
        RoundOutcome outcome = RoundOutcome.Failed;
        try
        {
            state.Rounds.Start(accepted.RunId, number, round.Indices, run.Adapter.Sha256);
            run.Begin(round, number, selected.Count);
            uint[] sum;
            try
            {
                sum = await round.Sum.WaitAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is RoundFailedException or SecureAggregationException)
            {
                // Too few survivors, a timeout or a protocol failure: nothing is released and nothing is charged. The
                // reason names why participants were missing (declines by rule, missed deadlines) where known.
                string missing = round.MissingSummary();
                string reason = missing.Length == 0 ? ex.Message : $"{ex.Message.TrimEnd('.')}; {missing}";
                state.Rounds.Fail(accepted.RunId, number, reason);
                run.End(RoundStage.Failed);
                OrchestratorLog.RoundFailed(logger, accepted.RunId, number, reason);
                return new RoundResult(RoundOutcome.Failed, round.ReplayedUpTo, reason);
            }
            if (round.Survivors.Count < accepted.Threshold)
            {
                // The round enforces this at every stage; checked again here because a release below it would be
                // charged at a price its noise does not carry.
                string reason = $"only {round.Survivors.Count} survivors, fewer than min_survivors {accepted.Threshold}; nothing is released";
                state.Rounds.Fail(accepted.RunId, number, reason);
                run.End(RoundStage.Failed);
                OrchestratorLog.RoundFailed(logger, accepted.RunId, number, reason);
                return new RoundResult(RoundOutcome.Failed, round.ReplayedUpTo, reason);
            }
            foreach ((int holder, int owner) in round.RejectedShares)
            {
                // A poisoned commitment or a lying holder: only that share was dropped; the round went on with the others.
                OrchestratorLog.ShareRejected(logger, accepted.RunId, number, NameOf(round, holder), NameOf(round, owner));
            }
            Release(run, round, number, DecodeMean(privacy, rotationSeed, sum, round.Survivors.Count, clientLevel), epsilonAfter);
            outcome = RoundOutcome.Released;
            return new RoundResult(RoundOutcome.Released, round.ReplayedUpTo);
        }
        catch (OperationCanceledException)
        {
            round.Abort(run.AbortReason ?? "the coordinator is shutting down");
            state.Rounds.Fail(accepted.RunId, number, run.AbortReason ?? "the coordinator shut down");
            run.End(RoundStage.Failed);
            throw;
        }
        finally
        {
            metrics?.RoundEnded(accepted.RunId, outcome, round);
            span?.SetTag("federated.round.outcome", Telemetry.CoordinatorMetrics.OutcomeName(outcome));
            span?.SetStatus(outcome == RoundOutcome.Released ? ActivityStatusCode.Ok : ActivityStatusCode.Error);
            rounds.Finish(round);
        }
    }

    private static string NameOf(SecAggRound round, int index) =>
        round.Indices.FirstOrDefault(p => p.Value == index).Key ?? index.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The survivors' mean update from the unmasked modular sum (central DP: with the coordinator's noise added in the ring first).</summary>
    private static float[] DecodeMean(PrivacyPlan privacy, byte[] rotationSeed, uint[] sum, int survivors, bool clientLevel)
    {
        // Central DP: exact discrete Gaussian integers added to the modular sum before decoding (Canonne, Kamath and
        // Steinke 2020), so the release is a post-processing of S + x + N whatever the other inputs, and the scale leaves
        // room in the ring for n clients plus the noise bound.
        // A record-only run adds none: its plan only sized the ring, and its privacy is each edge's DP-SGD.
        if (clientLevel)
        {
            privacy.Central?.AddNoise(sum);
        }
        float[] mean = new DSkellamDecoder(privacy.Quantizer, rotationSeed).DecodeSum(sum);
        for (int i = 0; i < mean.Length; i++)
        {
            mean[i] /= survivors;
        }
        return mean;
    }

    /// <summary>Applies the mean to the global adapter, stores it and completes the round in one transaction (release, charge, statuses, audit).</summary>
    private void Release(RunTracker run, SecAggRound round, int number, float[] mean, double epsilonAfter)
    {
        AcceptedRun accepted = run.Accepted;
        RunPlan plan = accepted.Plan;
        IReadOnlyList<int> survivors = round.Survivors;
        run.Global.ApplyMeanUpdate(mean.AsSpan(0, run.Global.BDimension));
        byte[] bytes = run.Global.Serialize();
        StoredAdapter stored = adapters.Write(bytes);
        var statuses = round.Indices.ToDictionary(
            p => p.Key, p => survivors.Contains(p.Value) ? ParticipantStatus.Uploaded : ParticipantStatus.Dropped, StringComparer.Ordinal);
        PrivacyPlan privacy = accepted.Privacy;
        var charge = new LedgerRecord(0, accepted.RunId, number, accepted.Population, epsilonAfter, epsilonAfter - run.EpsilonSpent, plan.Delta,
            (int)plan.Mechanism, accepted.NoiseMultiplier, plan.ClipNorm, survivors.Count, time.GetUtcNow(),
            new RdpCharge(privacy.Orders, privacy.RoundRdp), privacy.AdjacencyName);
        LedgerRecord charged;
        try
        {
            charged = state.Rounds.Complete(new RoundCompletion(charge, stored, statuses) { ClientLevel = PrivacyUnitWire.HasClientLevel(plan.PrivacyUnit) });
        }
        catch (Exception ex)
        {
            // Nothing of the round was recorded: its adapter's file must not outlive it.
            adapters.Discard(stored);
            if (ex is BudgetRefusedException)
            {
                // Refused by the budget re-check: the round released nothing, and the run cannot go on within its budget.
                state.Rounds.Fail(accepted.RunId, number, ex.Message);
                run.End(RoundStage.Failed);
            }
            throw;
        }
        run.Released(new AdapterRef { Sha256 = stored.Sha256, SizeBytes = (ulong)bytes.Length }, charged.EpsilonAfter);
    }
}
