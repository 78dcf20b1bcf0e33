using System.Diagnostics;
using System.Diagnostics.Metrics;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.Protos.V1;

namespace Federated.Coordinator.Telemetry;

/// <summary>
/// The coordinator's metrics (meter <see cref="MeterName"/>), named after the OpenTelemetry semantic conventions with a
/// <c>federated.</c> prefix. Nothing here is derived from a client's data: counts, durations, statuses, the privacy
/// ledger's epsilon and upload sizes (fixed by the plan) only. Client names never become attributes (unbounded and
/// identifying); run ids and populations do (chosen by the operator).
/// </summary>
public sealed class CoordinatorMetrics : IDisposable
{
    public const string MeterName = "Federated.Coordinator";

    /// <summary>The traces' source: one span per round.</summary>
    public static readonly ActivitySource Tracing = new(MeterName);

    private readonly Meter _meter;
    private readonly Counter<long> _roundsStarted;
    private readonly Counter<long> _roundsEnded;
    private readonly Histogram<double> _stageDuration;
    private readonly Counter<long> _participants;
    private readonly Counter<long> _dropouts;
    private readonly Counter<long> _declines;
    private readonly Histogram<double> _rpcDuration;
    private readonly Counter<long> _tlsRefusals;
    private readonly Counter<long> _rateLimited;
    private readonly Counter<long> _uploadBytes;

    public CoordinatorMetrics(IMeterFactory meters, CoordinatorState state)
    {
        ArgumentNullException.ThrowIfNull(meters);
        ArgumentNullException.ThrowIfNull(state);
        _meter = meters.Create(MeterName);
        _roundsStarted = _meter.CreateCounter<long>("federated.rounds.started", "{round}", "Rounds opened (participants selected and invited).");
        _roundsEnded = _meter.CreateCounter<long>("federated.rounds.ended", "{round}",
            "Rounds that ended, by federated.round.outcome: released (applied and charged), failed (nothing released or charged) or skipped (a Poisson sample of the wrong size).");
        _stageDuration = _meter.CreateHistogram<double>("federated.round.stage.duration", "s",
            "Time from a SecAgg+ stage's opening to its close (advertise_keys includes the participants' download and local training).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800] });
        _participants = _meter.CreateCounter<long>("federated.round.participants", "{participant}", "Participants invited to rounds.");
        _dropouts = _meter.CreateCounter<long>("federated.round.dropouts", "{participant}", "Invited participants whose input is not in a round's sum (dropped, declined or refused), in rounds that reached the unmask stage or failed.");
        _declines = _meter.CreateCounter<long>("federated.round.declines", "{participant}", "Rounds declined by a participant's local policy, by federated.decline.rule.");
        _rpcDuration = _meter.CreateHistogram<double>("federated.rpc.server.call.duration", "s",
            "Duration of each gRPC call the coordinator served, by rpc.method and rpc.grpc.status_code.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300] });
        _tlsRefusals = _meter.CreateCounter<long>("federated.tls.refusals", "{connection}", "Client certificates refused in the TLS handshake, by federated.tls.refusal.reason.");
        _rateLimited = _meter.CreateCounter<long>("federated.rpc.rate_limited", "{call}", "Calls refused by the per-identity rate limit, by rpc.method.");
        _uploadBytes = _meter.CreateCounter<long>("federated.upload.bytes", "By", "Masked-input bytes received from participants (ring elements, fixed by the plan).");
        _meter.CreateObservableGauge("federated.privacy.epsilon.spent", () => Budgets(state, b => b.EpsilonSpent), unit: null,
            "Epsilon spent by released rounds, per federated.population, at the budget's delta.");
        _meter.CreateObservableGauge("federated.privacy.epsilon.reserved", () => Budgets(state, b => b.EpsilonReserved), unit: null,
            "Epsilon reserved by running runs, per federated.population.");
        _meter.CreateObservableGauge("federated.privacy.epsilon.budget", () => Budgets(state, b => b.Epsilon), unit: null,
            "The population's epsilon budget, per federated.population.");
    }

    public void Dispose() => _meter.Dispose();

    /// <summary>A round opened with <paramref name="participants"/> invited.</summary>
    internal void RoundStarted(string runId, int participants)
    {
        var run = new KeyValuePair<string, object?>("federated.run.id", runId);
        _roundsStarted.Add(1, run);
        _participants.Add(participants, run);
    }

    /// <summary>A round ended: its outcome, each closed stage's duration, its dropouts and its declines by rule.</summary>
    internal void RoundEnded(string runId, RoundOutcome outcome, SecAggRound? round)
    {
        var run = new KeyValuePair<string, object?>("federated.run.id", runId);
        _roundsEnded.Add(1, run, new KeyValuePair<string, object?>("federated.round.outcome", OutcomeName(outcome)));
        if (round is null)
        {
            return;
        }
        IReadOnlyDictionary<RoundStage, DateTimeOffset> closed = round.StageClosedAt;
        DateTimeOffset opened = round.OpenedAt;
        foreach (RoundStage stage in (RoundStage[])[RoundStage.AdvertiseKeys, RoundStage.ShareKeys, RoundStage.MaskedInput, RoundStage.Unmask])
        {
            if (closed.TryGetValue(stage, out DateTimeOffset at))
            {
                _stageDuration.Record(Math.Max(0, (at - opened).TotalSeconds), run, new KeyValuePair<string, object?>("federated.round.stage", StageName(stage)));
                opened = at;
            }
        }
        int dropouts = round.Indices.Count - round.Survivors.Count;
        if (dropouts > 0)
        {
            _dropouts.Add(dropouts, run);
        }
        foreach ((string rule, int count) in round.DeclineRules)
        {
            _declines.Add(count, run, new KeyValuePair<string, object?>("federated.decline.rule", RuleLabel(rule)));
        }
    }

    internal void RpcServed(string method, Grpc.Core.StatusCode status, double seconds) =>
        _rpcDuration.Record(seconds,
            new KeyValuePair<string, object?>("rpc.system", "grpc"),
            new KeyValuePair<string, object?>("rpc.method", method),
            new KeyValuePair<string, object?>("rpc.grpc.status_code", (int)status));

    internal void TlsRefused(string reason) => _tlsRefusals.Add(1, new KeyValuePair<string, object?>("federated.tls.refusal.reason", reason));

    internal void RateLimited(string method) => _rateLimited.Add(1, new KeyValuePair<string, object?>("rpc.method", method));

    internal void Uploaded(string runId, long bytes) => _uploadBytes.Add(bytes, new KeyValuePair<string, object?>("federated.run.id", runId));

    internal static string OutcomeName(RoundOutcome outcome) => outcome switch
    {
        RoundOutcome.Released => "released",
        RoundOutcome.Failed => "failed",
        _ => "skipped",
    };

    internal static string StageName(RoundStage stage) => stage switch
    {
        RoundStage.AdvertiseKeys => "advertise_keys",
        RoundStage.ShareKeys => "share_keys",
        RoundStage.MaskedInput => "masked_input",
        RoundStage.Unmask => "unmask",
        _ => "other",
    };

    /// <summary>
    /// A decline rule as an attribute value: the rule names the edge sends (policy keys such as
    /// <c>allowed_target_modules</c>) pass; anything else from the network becomes <c>other</c>, so that a hostile
    /// client cannot grow the series without bound.
    /// </summary>
    internal static string RuleLabel(string rule)
    {
        if (rule.Length is 0 or > 48)
        {
            return rule.Length == 0 ? "unnamed" : "other";
        }
        foreach (char c in rule)
        {
            if (c is not ((>= 'a' and <= 'z') or (>= '0' and <= '9') or '_'))
            {
                return "other";
            }
        }
        return rule;
    }

    private static IEnumerable<Measurement<double>> Budgets(CoordinatorState state, Func<BudgetRecord, double> value)
    {
        IReadOnlyList<BudgetRecord> budgets;
        try
        {
            budgets = state.Budgets.List();
        }
        catch (ObjectDisposedException)
        {
            yield break;
        }
        foreach (BudgetRecord budget in budgets)
        {
            yield return new Measurement<double>(value(budget), new KeyValuePair<string, object?>("federated.population", budget.Population));
        }
    }
}
