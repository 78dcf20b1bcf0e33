using System.Diagnostics;
using Federated.Aggregation.SecureAggregation;
using Federated.Protos.V1;
using Federated.Wire;
using SecAggParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// One SecAgg+ round over the wire: holds the <see cref="ServerSession"/>, serializes every call into it, and
/// closes each stage when every expected participant has submitted or the stage deadline passes, whichever comes
/// first. Stage RPCs wait on the stage's closing and then get their own part of the result. A round with too few
/// survivors (fewer than the plan's release threshold, whatever the graph could unmask) fails and releases nothing.
/// Unmasking, the one heavy step, runs outside the lock on every core; the stage is closed to every other call meanwhile.
/// </summary>
internal sealed partial class SecAggRound : IDisposable
{
    private readonly Lock _gate = new();
    private readonly ServerSession _session;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, int> _indexByClient;
    private readonly HashSet<int> _declined = [];
    private readonly HashSet<int> _submitted = [];
    private readonly HashSet<int> _uploading = [];
    private readonly Dictionary<int, SignedKeys> _signed = [];
    private readonly Dictionary<int, byte[]> _confirmations = [];
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, byte[]>> _confirmed = New<IReadOnlyDictionary<int, byte[]>>();
    private ITimer? _confirmTimer;
    private readonly Dictionary<string, int> _declineRules = new(StringComparer.Ordinal);
    private readonly List<(RoundStage Stage, int Missed)> _missedDeadline = [];
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, KeyRosterMessage>> _rosters = New<IReadOnlyDictionary<int, KeyRosterMessage>>();
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, ForwardedSharesMessage>> _forwarded = New<IReadOnlyDictionary<int, ForwardedSharesMessage>>();
    private readonly TaskCompletionSource<IReadOnlyDictionary<int, UnmaskRequestMessage>> _unmaskRequests = New<IReadOnlyDictionary<int, UnmaskRequestMessage>>();
    private readonly TaskCompletionSource<uint[]> _sum = New<uint[]>();
    private readonly Dictionary<RoundStage, DateTimeOffset> _closedAt = [];
    private readonly UploadBuffers _uploads;
    private HashSet<int> _expected;
    private ITimer? _deadline;
    private RoundStage _stage = RoundStage.AdvertiseKeys;
    private long? _replayedUpTo;
    private IReadOnlyList<int> _survivors = [];
    private long _sessionTicks;
    private long _unmaskTicks;

    // True from the unmask stage's close until its result is in: the session belongs to the unmasking thread alone.
    private bool _unmasking;

    // Dispose arrived while unmasking: the unmasking thread disposes the session when it is done with it.
    private bool _disposeWhenUnmasked;

    public SecAggRound(SecAggRoundPlan plan, byte[] graphSeed, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(graphSeed);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(plan.Round, 1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(plan.StageTimeout, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(plan.TrainingAllowance, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(plan.MaxChunkBytes, 4);
        if (plan.ReleaseThreshold < 1 || plan.ReleaseThreshold > plan.Participants.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(plan), plan.ReleaseThreshold, $"the release threshold (min survivors) must be between 1 and the {plan.Participants.Count} participants.");
        }
        Plan = plan;
        _time = time;
        // Indices 1..n in identity order: Shamir x-coordinates must be positive and distinct.
        _indexByClient = plan.Participants.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)
            .Select((name, i) => (name, i + 1)).ToDictionary(p => p.name, p => p.Item2, StringComparer.Ordinal);
        if (_indexByClient.Count != plan.Participants.Count)
        {
            throw new ArgumentException("a participant appears twice in the round plan", nameof(plan));
        }
        Parameters = SecAggParameters.Create(plan.RunId, plan.Round, _indexByClient.Values, plan.VectorLength, plan.Bits, plan.Degree, plan.Threshold, graphSeed);
        _session = new ServerSession(Parameters);
        _expected = [.. _indexByClient.Values];
        _uploads = new UploadBuffers(plan.VectorLength, plan.Participants.Count);
        OpenedAt = time.GetUtcNow();
        Deadlines = plan.Deadlines(time.GetUtcNow());
        ArmDeadline(0);
    }

    public SecAggRoundPlan Plan { get; }

    /// <summary>When the round opened (the clock of the injected TimeProvider).</summary>
    public DateTimeOffset OpenedAt { get; private set; }

    /// <summary>
    /// Wall time spent in the protocol's server side so far: taking in each stage's messages and chunks, closing the stages
    /// and unmasking (the coordinator's own work, without the waits on participants), for the overhead benchmark.
    /// </summary>
    public TimeSpan SessionTime
    {
        get
        {
            lock (_gate)
            {
                return Stopwatch.GetElapsedTime(0, _sessionTicks);
            }
        }
    }

    /// <summary>The part of <see cref="SessionTime"/> spent unmasking (reconstruction and mask removal, outside the lock).</summary>
    public TimeSpan UnmaskTime
    {
        get
        {
            lock (_gate)
            {
                return Stopwatch.GetElapsedTime(0, _unmaskTicks);
            }
        }
    }

    /// <summary>When each closed stage closed, for status views and the overhead benchmark.</summary>
    public IReadOnlyDictionary<RoundStage, DateTimeOffset> StageClosedAt
    {
        get
        {
            lock (_gate)
            {
                return new Dictionary<RoundStage, DateTimeOffset>(_closedAt);
            }
        }
    }

    public SecAggParameters Parameters { get; }

    public RoundRef Ref => new() { RunId = Plan.RunId, Round = (uint)Plan.Round };

    /// <summary>The time each of the four stages closes at the latest.</summary>
    public IReadOnlyList<DateTimeOffset> Deadlines { get; }

    public IReadOnlyDictionary<string, int> Indices => _indexByClient;

    public RoundStage Stage
    {
        get
        {
            lock (_gate)
            {
                return _stage;
            }
        }
    }

    /// <summary>
    /// Completes with the unmasked sum in Z_(2^b) of the survivors' inputs, or faults when the round fails: with a
    /// <see cref="RoundFailedException"/> (abort, shutdown) or the protocol's <see cref="SecureAggregationException"/>.
    /// </summary>
    public Task<uint[]> Sum => _sum.Task;

    /// <summary>Called (under the round's lock: keep it short, take no lock that is held while reading this round) after each report and stage change.</summary>
    public Action? Progress { get; set; }

    /// <summary>
    /// The stage for status views and how many participants reported in it. Before the first key advertisement the
    /// round shows as MANIFEST: participants are fetching the manifest and the adapter, and training.
    /// </summary>
    public (RoundStage Stage, int Reported) StageReport()
    {
        lock (_gate)
        {
            return _stage == RoundStage.AdvertiseKeys && _submitted.Count == 0 ? (RoundStage.Manifest, 0) : (_stage, _submitted.Count);
        }
    }

    /// <summary>Revealed shares dropped at unmasking because they did not match their dealer's commitment: (holder, owner) indices.</summary>
    public IReadOnlyList<(int Holder, int Owner)> RejectedShares
    {
        get
        {
            lock (_gate)
            {
                return [.. _session.RejectedShares];
            }
        }
    }

    /// <summary>How many survivors have signed the survivor set in the unmask stage's consistency check so far.</summary>
    public int ConfirmationCount
    {
        get
        {
            lock (_gate)
            {
                return _confirmations.Count;
            }
        }
    }

    /// <summary>Each advertised participant's certificate and key signature, by index (complete once stage 1 closed).</summary>
    public IReadOnlyDictionary<int, SignedKeys> Signatures
    {
        get
        {
            lock (_gate)
            {
                return new Dictionary<int, SignedKeys>(_signed);
            }
        }
    }

    /// <summary>How many participants declined, by the rule they named (the metrics' and the status's grouping).</summary>
    public IReadOnlyDictionary<string, int> DeclineRules
    {
        get
        {
            lock (_gate)
            {
                return new Dictionary<string, int>(_declineRules, StringComparer.Ordinal);
            }
        }
    }

    /// <summary>
    /// Why participants were missing, in the operator's terms: declines grouped by the client's rule ("declined by
    /// allowed_target_modules (3)") and stages closed by their deadline with how many missed it, naming the flag that
    /// sets it. Empty when nobody declined or missed a deadline.
    /// </summary>
    public string MissingSummary()
    {
        lock (_gate)
        {
            var parts = new List<string>();
            if (_declineRules.Count > 0)
            {
                parts.Add("declined by " + string.Join(", ", _declineRules.OrderByDescending(p => p.Value).ThenBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} ({p.Value})")));
            }
            foreach ((RoundStage stage, int missed) in _missedDeadline.Where(m => m.Missed > 0))
            {
                string name = stage switch
                {
                    RoundStage.AdvertiseKeys => "advertise_keys (manifest, adapter download and local training happen before it)",
                    RoundStage.ShareKeys => "share_keys",
                    RoundStage.MaskedInput => "masked_input",
                    _ => "unmask",
                };
                parts.Add(Plan.MissedDeadline(stage, name, missed));
            }
            return string.Join("; ", parts);
        }
    }

    /// <summary>
    /// The participants the current stage still waits for (by name) and when it closes at the latest: what a status
    /// view shows so an operator knows whom a stage is waiting on. Empty once the round ended.
    /// </summary>
    public (IReadOnlyList<string> Waiting, DateTimeOffset? Deadline) Waiting()
    {
        lock (_gate)
        {
            if (_stage is RoundStage.Completed or RoundStage.Failed)
            {
                return ([], null);
            }
            string[] waiting = [.. _indexByClient.Where(p => _expected.Contains(p.Value) && !_submitted.Contains(p.Value)).Select(p => p.Key).Order(StringComparer.Ordinal)];
            int stage = _stage switch
            {
                RoundStage.AdvertiseKeys => 0,
                RoundStage.ShareKeys => 1,
                RoundStage.MaskedInput => 2,
                _ => 3,
            };
            return (waiting, Deadlines[stage]);
        }
    }

    /// <summary>The survivors whose inputs are in the sum (known once stage 3 closed).</summary>
    public IReadOnlyList<int> Survivors
    {
        get
        {
            lock (_gate)
            {
                return _survivors;
            }
        }
    }

    /// <summary>The caller's index; PERMISSION_DENIED for an identity that was not selected.</summary>
    public int IndexOf(string clientId) =>
        _indexByClient.TryGetValue(clientId, out int index)
            ? index
            : throw new NotAParticipantException($"client '{clientId}' is not a participant of round {Plan.Round} of run {Plan.RunId}");

    /// <summary>Whether this participant's message for the current stage was accepted (status views; tests wait on it).</summary>
    public bool HasSubmitted(string clientId)
    {
        lock (_gate)
        {
            return _indexByClient.TryGetValue(clientId, out int index) && _submitted.Contains(index);
        }
    }

    /// <summary>
    /// The highest round of this run that a participant declined this one as a replay of (it was already charged for that
    /// round); null when none did. The run's next round is numbered after it.
    /// </summary>
    public long? ReplayedUpTo
    {
        get
        {
            lock (_gate)
            {
                return _replayedUpTo;
            }
        }
    }
}
