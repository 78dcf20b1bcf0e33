using System.Diagnostics;
using Federated.Aggregation.SecureAggregation;
using Federated.Protos.V1;
using Federated.Wire;
using SecAggParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;

namespace Federated.Coordinator.Rounds;

internal sealed partial class SecAggRound
{
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
