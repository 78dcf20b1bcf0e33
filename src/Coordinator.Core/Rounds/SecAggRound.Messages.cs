using System.Diagnostics;
using Federated.Aggregation.SecureAggregation;
using Federated.Protos.V1;
using Federated.Wire;
using SecAggParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;

namespace Federated.Coordinator.Rounds;

internal sealed partial class SecAggRound
{
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
}
