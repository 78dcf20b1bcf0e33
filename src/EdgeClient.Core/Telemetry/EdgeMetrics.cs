using System.Diagnostics;
using System.Diagnostics.Metrics;
using Federated.EdgeClient.Rounds;
using Federated.Training.Trainer;

namespace Federated.EdgeClient.Telemetry;

/// <summary>
/// The edge client's metrics (meter <see cref="MeterName"/>): rounds joined and declined by rule, local training step
/// time and throughput, masked bytes uploaded, and this machine's own epsilon from its ledger. No loss, no gradient, no
/// text: nothing that describes the data beyond how many tokens were trained on.
/// </summary>
public sealed class EdgeMetrics : IDisposable
{
    public const string MeterName = "Federated.EdgeClient";

    private readonly Meter _meter = new(MeterName);
    private readonly Counter<long> _rounds;
    private readonly Histogram<double> _stepDuration;
    private readonly Counter<long> _tokens;
    private readonly Counter<long> _uploadBytes;
    private long _lastStep = -1;
    private long _lastStepAt;
    private long _roundTokens;
    private double _tokensPerSecond = double.NaN;
    private double _epsilon = double.NaN;
    private double _worstCaseEpsilon = double.NaN;
    private double _recordEpsilon = double.NaN;

    public EdgeMetrics()
    {
        _rounds = _meter.CreateCounter<long>("federated.edge.rounds", "{round}",
            "Rounds this client was invited to, by federated.round.outcome (joined: uploaded; declined: refused by federated.decline.rule; failed: ended without this client).");
        _stepDuration = _meter.CreateHistogram<double>("federated.edge.training.step.duration", "s",
            "Wall time of each local training step after a round's first (which includes warm-up).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });
        _tokens = _meter.CreateCounter<long>("federated.edge.training.tokens", "{token}", "Tokens trained on locally.");
        _uploadBytes = _meter.CreateCounter<long>("federated.edge.upload.bytes", "By", "Masked bytes uploaded (the ring vector, fixed by the plan).");
        _meter.CreateObservableGauge("federated.edge.training.tokens_per_second", () => Finite(Volatile.Read(ref _tokensPerSecond)), "{token}/s",
            "Local training throughput at the last step.");
        _meter.CreateObservableGauge("federated.edge.privacy.epsilon", () => Finite(Volatile.Read(ref _epsilon)), unit: null,
            "This machine's lifetime epsilon from its own ledger (t-1 honest peers), at the policy's delta.");
        _meter.CreateObservableGauge("federated.edge.privacy.worst_case_epsilon", () => Finite(Volatile.Read(ref _worstCaseEpsilon)), unit: null,
            "This machine's lifetime epsilon from its own noise share alone, at the policy's delta (absent while unbounded).");
        _meter.CreateObservableGauge("federated.edge.privacy.record_epsilon", () => Finite(Volatile.Read(ref _recordEpsilon)), unit: null,
            "This machine's lifetime record-level (DP-SGD) epsilon at the policy's delta (absent before a record-level round).");
    }

    public void Dispose() => _meter.Dispose();

    /// <summary>A round ended for this client: joined (uploaded), declined by a rule, or failed.</summary>
    public void Round(RoundWorkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (result.Participated)
        {
            _rounds.Add(1, new KeyValuePair<string, object?>("federated.round.outcome", "joined"));
            _uploadBytes.Add(checked((long)result.UploadedBytes));
        }
        else
        {
            _rounds.Add(1, new KeyValuePair<string, object?>("federated.round.outcome", "declined"),
                new KeyValuePair<string, object?>("federated.decline.rule", result.DeclinedRule ?? "unnamed"));
        }
        Interlocked.Exchange(ref _lastStep, -1);
    }

    /// <summary>A round that ended without this client (a dropped stage, an unusable message).</summary>
    public void RoundFailed()
    {
        _rounds.Add(1, new KeyValuePair<string, object?>("federated.round.outcome", "failed"));
        Interlocked.Exchange(ref _lastStep, -1);
    }

    /// <summary>
    /// One local training step (reported in order on the training thread): its duration from the previous step of the
    /// same round, its tokens (the trainer's count is cumulative over the round) and the throughput.
    /// </summary>
    public void Step(TrainingProgress progress)
    {
        ArgumentNullException.ThrowIfNull(progress);
        long now = Stopwatch.GetTimestamp();
        long previous = Interlocked.Exchange(ref _lastStep, progress.Step);
        long previousAt = Interlocked.Exchange(ref _lastStepAt, now);
        bool next = previous >= 1 && progress.Step == previous + 1;
        if (next)
        {
            _stepDuration.Record(Stopwatch.GetElapsedTime(previousAt, now).TotalSeconds);
        }
        long before = Interlocked.Exchange(ref _roundTokens, progress.Tokens);
        if (!next)
        {
            // A round's first step: the trainer's count starts again from zero.
            before = 0;
        }
        if (progress.Tokens > before)
        {
            _tokens.Add(progress.Tokens - before);
        }
        Volatile.Write(ref _tokensPerSecond, progress.TokensPerSecond);
    }

    /// <summary>The ledger's lifetime epsilons after a charge (worst case: infinity while unbounded; record: NaN before any record-level round).</summary>
    public void Epsilon(double epsilon, double worstCase, double record = double.NaN)
    {
        Volatile.Write(ref _epsilon, epsilon);
        Volatile.Write(ref _worstCaseEpsilon, worstCase);
        Volatile.Write(ref _recordEpsilon, record);
    }

    private static IEnumerable<Measurement<double>> Finite(double value)
    {
        if (double.IsFinite(value))
        {
            yield return new Measurement<double>(value);
        }
    }
}
