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
internal sealed class SecAggRound : IDisposable
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

    /// <summary>
    /// Records a participant's decline: once per participant, and only before it advertised its keys (after that its
    /// keys are in peers' rosters and leaving is a dropout). <paramref name="lastChargedRound"/> is set for a replay decline.
    /// </summary>
    public void Decline(int index, long? lastChargedRound = null, string rule = "")
    {
        lock (_gate)
        {
            if (_declined.Contains(index))
            {
                throw new DuplicateMessageException($"participant {index} already declined round {Plan.Round}; a decline is recorded once");
            }
            if (_stage != RoundStage.AdvertiseKeys || _submitted.Contains(index))
            {
                throw new ProtocolStageException($"round {Plan.Round} is past the point where this participant can decline (it advertised its keys)");
            }
            if (lastChargedRound is { } last)
            {
                _replayedUpTo = Math.Max(_replayedUpTo ?? 0, last);
            }
            string key = rule.Length == 0 ? "unnamed" : rule;
            _declineRules[key] = _declineRules.GetValueOrDefault(key) + 1;
            _declined.Add(index);
            _expected.Remove(index);
            CloseIfComplete();
        }
    }

    /// <summary>
    /// Stage 1: records the caller's keys with their signature and the caller's certificate (both forwarded in every
    /// roster; the caller checked the signature first) and waits for the roster.
    /// </summary>
    public async Task<KeyRosterMessage> AdvertiseAsync(AdvertiseKeysMessage message, SignedKeys signed, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(signed);
        Submit(RoundStage.AdvertiseKeys, message.Sender, () =>
        {
            _session.ReceiveAdvertisement(message);
            _signed[message.Sender] = signed;
        });
        IReadOnlyDictionary<int, KeyRosterMessage> rosters = await _rosters.Task.WaitAsync(cancellationToken);
        return rosters.TryGetValue(message.Sender, out KeyRosterMessage? roster) ? roster : throw Dropped(message.Sender);
    }

    public async Task<ForwardedSharesMessage> ShareKeysAsync(ShareKeysMessage message, CancellationToken cancellationToken)
    {
        Submit(RoundStage.ShareKeys, message.Sender, () => _session.ReceiveShareKeys(message));
        IReadOnlyDictionary<int, ForwardedSharesMessage> forwarded = await _forwarded.Task.WaitAsync(cancellationToken);
        return forwarded.TryGetValue(message.Sender, out ForwardedSharesMessage? shares) ? shares : throw Dropped(message.Sender);
    }

    /// <summary>Adds one in-order chunk to the running sum (O(d) memory, not O(n d)).</summary>
    public void ReceiveChunk(Aggregation.SecureAggregation.MaskedInputChunk chunk)
    {
        lock (_gate)
        {
            RequireStage(RoundStage.MaskedInput);
            RequireLive(chunk.Sender);
            long start = Stopwatch.GetTimestamp();
            try
            {
                _session.ReceiveMaskedInputChunk(chunk);
            }
            finally
            {
                _sessionTicks += Stopwatch.GetTimestamp() - start;
            }
        }
    }

    /// <summary>Refuses an upload that could not be accepted (wrong stage, a declined or dropped caller, a second upload) before it is read.</summary>
    public void CheckUploadOpen(int index)
    {
        lock (_gate)
        {
            RequireStage(RoundStage.MaskedInput);
            RequireLive(index);
            if (_session.State.MaskedInputs.Contains(index))
            {
                throw new DuplicateMessageException($"participant {index} already sent its whole masked input for round {Plan.Round}");
            }
        }
    }

    /// <summary>Waits for one of the round's upload buffers (see <see cref="UploadBuffers"/>); dispose to release it.</summary>
    public Task<IDisposable> AcquireUploadSlotAsync(CancellationToken cancellationToken) => _uploads.AcquireAsync(cancellationToken);

    /// <summary>
    /// Claims the participant's one upload in flight; a second concurrent upload stream of the same participant is
    /// refused, so one identity cannot hold several of the round's upload buffers with trickled chunks. Dispose the
    /// claim when the stream ends, however it ends.
    /// </summary>
    public IDisposable BeginUpload(int index)
    {
        lock (_gate)
        {
            if (!_uploading.Add(index))
            {
                throw new DuplicateMessageException($"participant {index} already has an upload in flight in round {Plan.Round}; one at a time");
            }
        }
        return new UploadClaim(this, index);
    }

    /// <summary>Upload streams now in flight (status views; tests wait on it).</summary>
    public int UploadsInFlight
    {
        get
        {
            lock (_gate)
            {
                return _uploading.Count;
            }
        }
    }

    private sealed class UploadClaim(SecAggRound round, int index) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                lock (round._gate)
                {
                    round._uploading.Remove(index);
                }
            }
        }
    }

    /// <summary>Marks a participant's upload complete and waits for stage 3 to close.</summary>
    public async Task<UnmaskRequestMessage> FinishUploadAsync(int index, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            RequireStage(RoundStage.MaskedInput);
            if (!_session.State.MaskedInputs.Contains(index))
            {
                throw new MalformedMessageException($"participant {index} ended its upload before the whole masked vector arrived");
            }
            _submitted.Add(index);
            CloseIfComplete();
        }
        IReadOnlyDictionary<int, UnmaskRequestMessage> requests = await _unmaskRequests.Task.WaitAsync(cancellationToken);
        return requests.TryGetValue(index, out UnmaskRequestMessage? request) ? request : throw Dropped(index);
    }

    /// <summary>
    /// The consistency check: records a survivor's signature on the survivor set (checked against the certificate it
    /// advertised its keys with) and waits until every survivor has signed or half the unmask stage has passed, then
    /// returns every signature collected, by index.
    /// </summary>
    public async Task<IReadOnlyDictionary<int, byte[]>> ConfirmSurvivorsAsync(int index, byte[] signature, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(signature);
        lock (_gate)
        {
            RequireStage(RoundStage.Unmask);
            if (!_survivors.Contains(index))
            {
                throw new ParticipantNotLiveException($"participant {index} is not a survivor of round {Plan.Round}; only survivors confirm the survivor set");
            }
            if (_confirmations.ContainsKey(index))
            {
                throw new DuplicateMessageException($"participant {index} already signed the survivor set of round {Plan.Round}");
            }
            using (var certificate = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificate(_signed[index].Certificate))
            {
                if (!KeyAdvertisement.VerifySurvivors(certificate, Ref, _survivors, signature))
                {
                    throw new MalformedMessageException($"participant {index}'s signature does not verify on the survivor set of round {Plan.Round} with the certificate it advertised its keys with");
                }
            }
            _confirmations[index] = signature;
            if (_survivors.All(_confirmations.ContainsKey))
            {
                _confirmed.TrySetResult(new Dictionary<int, byte[]>(_confirmations));
            }
            else if (_confirmTimer is null)
            {
                // Whoever has not signed by half the unmask stage has dropped for the check; the rest still get their answer.
                DateTimeOffset due = _closedAt.GetValueOrDefault(RoundStage.MaskedInput, _time.GetUtcNow()) + Plan.StageTimeout / 2;
                TimeSpan wait = due - _time.GetUtcNow();
                _confirmTimer = _time.CreateTimer(_ =>
                {
                    lock (_gate)
                    {
                        _confirmed.TrySetResult(new Dictionary<int, byte[]>(_confirmations));
                    }
                }, null, wait > TimeSpan.Zero ? wait : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
            }
        }
        return await _confirmed.Task.WaitAsync(cancellationToken);
    }

    public void Unmask(UnmaskResponseMessage message) =>
        Submit(RoundStage.Unmask, message.Sender, () => _session.ReceiveUnmaskResponse(message));

    /// <summary>Ends the round without a release (an engineer's abort).</summary>
    public void Abort(string reason)
    {
        lock (_gate)
        {
            Fail(new RoundFailedException(reason));
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _deadline?.Dispose();
            if (_stage is not (RoundStage.Completed or RoundStage.Failed))
            {
                Fail(new RoundFailedException("the coordinator is shutting down"));
            }
            if (_unmasking)
            {
                // The unmasking thread still reads the running sum; it wipes it when it is done.
                _disposeWhenUnmasked = true;
            }
            else
            {
                _session.Dispose();
            }
        }
    }

    private void Submit(RoundStage stage, int index, Action receive)
    {
        bool unmask;
        lock (_gate)
        {
            RequireStage(stage);
            RequireLive(index);
            long start = Stopwatch.GetTimestamp();
            try
            {
                receive();
            }
            finally
            {
                _sessionTicks += Stopwatch.GetTimestamp() - start;
            }
            _submitted.Add(index);
            unmask = CloseIfComplete();
        }
        if (unmask)
        {
            UnmaskOutsideLock();
        }
    }

    private void RequireStage(RoundStage stage)
    {
        if (_stage == RoundStage.Failed)
        {
            throw new RoundFailedException($"round {Plan.Round} of run {Plan.RunId} failed and releases nothing");
        }
        if (_stage != stage || _unmasking)
        {
            string now = _unmasking ? "unmasking (its stage is closed)" : $"in stage {_stage}";
            throw new ProtocolStageException($"round {Plan.Round} is {now}, not in stage {stage}");
        }
    }

    // A participant that declined or was dropped at an earlier stage has no say in this one. Checked here, before
    // the protocol state, so that the session's "unknown participant" errors only ever mean a bad field.
    private void RequireLive(int index)
    {
        if (!_expected.Contains(index))
        {
            string why = _declined.Contains(index) ? "declined" : "was dropped at an earlier stage";
            throw new ParticipantNotLiveException($"participant {index} {why} and takes no further part in round {Plan.Round} of run {Plan.RunId}");
        }
    }

    // Called under _gate. True when the unmask stage closed and the caller must run UnmaskOutsideLock once it left the lock.
    private bool CloseIfComplete()
    {
        bool unmask = false;
        if (_expected.IsSubsetOf(_submitted))
        {
            unmask = CloseStage();
        }
        Progress?.Invoke();
        return unmask;
    }

    private void OnDeadline(RoundStage stage)
    {
        bool unmask = false;
        lock (_gate)
        {
            if (_stage == stage && !_unmasking)
            {
                _missedDeadline.Add((stage, _expected.Count(i => !_submitted.Contains(i))));
                unmask = CloseStage();
                Progress?.Invoke();
            }
        }
        if (unmask)
        {
            UnmaskOutsideLock();
        }
    }

    // Called under _gate. Returns true when it closed the unmask stage: the session is then the caller's alone, to
    // unmask outside the lock (every other call is refused meanwhile, see RequireStage).
    private bool CloseStage()
    {
        RoundStage closing = _stage;
        long start = Stopwatch.GetTimestamp();
        try
        {
            switch (_stage)
            {
                case RoundStage.AdvertiseKeys:
                    IReadOnlyDictionary<int, KeyRosterMessage> rosters = _session.CloseAdvertiseKeys();
                    RequireReleaseThreshold(rosters.Count, "advertised their keys");
                    Advance(RoundStage.ShareKeys, rosters.Keys, 1);
                    _rosters.TrySetResult(rosters);
                    break;
                case RoundStage.ShareKeys:
                    IReadOnlyDictionary<int, ForwardedSharesMessage> forwarded = _session.CloseShareKeys();
                    RequireReleaseThreshold(forwarded.Count, "shared their keys");
                    Advance(RoundStage.MaskedInput, forwarded.Keys, 2);
                    _forwarded.TrySetResult(forwarded);
                    break;
                case RoundStage.MaskedInput:
                    // Checked before any unmask request goes out: a round that cannot be released reveals no share.
                    RequireReleaseThreshold(_session.State.MaskedInputs.Count, "sent their masked input");
                    IReadOnlyDictionary<int, UnmaskRequestMessage> requests = _session.CloseMaskedInput();
                    _survivors = [.. requests.Keys.Order()];
                    Advance(RoundStage.Unmask, requests.Keys, 3);
                    _unmaskRequests.TrySetResult(requests);
                    break;
                case RoundStage.Unmask:
                    _deadline?.Dispose();
                    _unmasking = true;
                    // Its close time is stamped when the unmasking is done (the overhead benchmark reads it).
                    return true;
            }
        }
        catch (SecureAggregationException ex)
        {
            // The protocol's own exception: callers waiting on the stage get the status it maps to.
            Fail(ex);
        }
        finally
        {
            _sessionTicks += Stopwatch.GetTimestamp() - start;
        }
        _closedAt[closing] = _time.GetUtcNow();
        return false;
    }

    // The unmask stage's work, outside _gate: reconstruction and mask removal take |dropped| x |neighbours| + |survivors|
    // mask expansions of d values, on every core, while status views and late callers are answered.
    private void UnmaskOutsideLock()
    {
        uint[]? sum = null;
        Exception? failure = null;
        long start = Stopwatch.GetTimestamp();
        try
        {
            sum = _session.Unmask(Environment.ProcessorCount);
        }
        catch (SecureAggregationException ex)
        {
            // The protocol's own exception: callers waiting on the round get the status it maps to.
            failure = ex;
        }
        catch (Exception ex)
        {
            // Any other fault (a broken invariant, a crypto error) must still end the round, or its callers would wait
            // forever with the stage deadline gone; nothing half-unmasked is released.
            failure = new RoundFailedException($"unmasking round {Plan.Round} of run {Plan.RunId} failed: {ex.Message}");
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        lock (_gate)
        {
            _sessionTicks += elapsed;
            _unmaskTicks = elapsed;
            _unmasking = false;
            _closedAt[RoundStage.Unmask] = _time.GetUtcNow();
            if (_stage == RoundStage.Failed)
            {
                // Aborted or shut down meanwhile: the sum is not released.
                if (sum is not null)
                {
                    Array.Clear(sum);
                }
            }
            else if (failure is not null)
            {
                Fail(failure);
            }
            else
            {
                _stage = RoundStage.Completed;
                _sum.TrySetResult(sum!);
            }
            if (_disposeWhenUnmasked)
            {
                _session.Dispose();
            }
            Progress?.Invoke();
        }
    }

    // The release threshold, not the graph's: a sparse graph can unmask far fewer survivors than the noise is priced for.
    private void RequireReleaseThreshold(int remaining, string what)
    {
        if (remaining < Plan.ReleaseThreshold)
        {
            throw new InsufficientSurvivorsException(
                $"only {remaining} participants {what}, fewer than the release threshold {Plan.ReleaseThreshold} (min survivors) of round {Plan.Round}; it fails and releases nothing.");
        }
    }

    private void Advance(RoundStage next, IEnumerable<int> expected, int deadlineIndex)
    {
        _stage = next;
        _expected = [.. expected];
        _submitted.Clear();
        ArmDeadline(deadlineIndex);
    }

    private void ArmDeadline(int stageIndex)
    {
        _deadline?.Dispose();
        RoundStage stage = _stage;
        TimeSpan due = Deadlines[stageIndex] - _time.GetUtcNow();
        _deadline = _time.CreateTimer(_ => OnDeadline(stage), null, due < TimeSpan.Zero ? TimeSpan.Zero : due, Timeout.InfiniteTimeSpan);
    }

    private void Fail(Exception reason)
    {
        _deadline?.Dispose();
        _stage = RoundStage.Failed;
        _rosters.TrySetException(reason);
        _forwarded.TrySetException(reason);
        _unmaskRequests.TrySetException(reason);
        _confirmed.TrySetException(reason);
        _confirmTimer?.Dispose();
        _sum.TrySetException(reason);
    }

    private ParticipantDroppedException Dropped(int index) =>
        new($"participant {index} missed a stage of round {Plan.Round} and was dropped");

    private static TaskCompletionSource<T> New<T>() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
