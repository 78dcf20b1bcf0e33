using System.Security.Cryptography;

namespace Federated.Aggregation.SecureAggregation;

public sealed partial class ServerSession
{
    /// <summary>Stage 3: adds a whole masked input.</summary>
    public void ReceiveMaskedInput(MaskedInputMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        RequireStage(SecAggStage.MaskedInput, "a masked input");
        RequireMember(_u2, message.Sender, "a masked input");
        if (message.MaskedInput is null || message.MaskedInput.Length != _parameters.VectorLength)
        {
            throw new MalformedMessageException($"masked input from client {message.Sender} has length {message.MaskedInput?.Length ?? 0}; expected {_parameters.VectorLength}.");
        }
        if (_nextOffset.GetValueOrDefault(message.Sender) != 0)
        {
            throw new DuplicateMessageException($"client {message.Sender} already streamed part of its masked input.");
        }
        ReceiveMaskedInputChunk(new MaskedInputChunk(message.Sender, 0, message.MaskedInput));
    }

    /// <summary>Stage 3 streamed: adds the next chunk of a client's masked input (chunks arrive in order).</summary>
    public void ReceiveMaskedInputChunk(MaskedInputChunk chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        RequireStage(SecAggStage.MaskedInput, "a masked input");
        RequireMember(_u2, chunk.Sender, "a masked input");
        if (_u3.Contains(chunk.Sender))
        {
            throw new DuplicateMessageException($"client {chunk.Sender} already sent its whole masked input.");
        }
        int expected = _nextOffset.GetValueOrDefault(chunk.Sender);
        if (chunk.Offset != expected)
        {
            throw new MalformedMessageException($"masked input chunk from client {chunk.Sender} starts at {chunk.Offset}; expected {expected}.");
        }
        if (chunk.Values.Length == 0 || chunk.Values.Length > _parameters.VectorLength - expected)
        {
            throw new MalformedMessageException(
                $"masked input chunk from client {chunk.Sender} has {chunk.Values.Length} values; between 1 and {_parameters.VectorLength - expected} remain.");
        }
        Span<uint> target = _accumulator.AsSpan(expected, chunk.Values.Length);
        ReadOnlySpan<uint> values = chunk.Values.Span;
        if (RingVector.AddInPlaceCheckingRange(target, values, _modulusMask) != 0)
        {
            RingVector.SubtractInPlace(target, values); // undo: a rejected chunk leaves the sum untouched
            throw new MalformedMessageException($"masked input chunk from client {chunk.Sender} has values outside Z_(2^{_parameters.Bits}).");
        }
        int next = expected + values.Length;
        _nextOffset[chunk.Sender] = next;
        if (next == _parameters.VectorLength)
        {
            _u3.Add(chunk.Sender);
        }
    }

    /// <summary>Ends stage 3; returns each survivor's unmask request.</summary>
    public IReadOnlyDictionary<int, UnmaskRequestMessage> CloseMaskedInput()
    {
        RequireStage(SecAggStage.MaskedInput, "closing the masked-input stage");
        int[] partial = _nextOffset.Where(kv => kv.Value > 0 && kv.Value < _parameters.VectorLength).Select(kv => kv.Key).Order().ToArray();
        if (partial.Length > 0)
        {
            // A half-added vector cannot be taken out of the running sum without keeping it (O(n d) memory).
            Fail($"clients {string.Join(", ", partial)} stopped part-way through their masked input; their partial sums cannot be separated, so the round fails.");
            throw new SecureAggregationException(_failure!);
        }
        RequireSurvivors(_u3.Count, "masked inputs");
        var requests = new Dictionary<int, UnmaskRequestMessage>();
        foreach (int v in _u3)
        {
            int[] holders = _forwardedSenders[v];
            var survivors = holders.Where(_u3.Contains).Append(v).Order().ToArray();
            var dropped = holders.Where(u => !_u3.Contains(u)).ToArray();
            requests[v] = new UnmaskRequestMessage(v, survivors, dropped);
        }
        foreach (var (id, request) in requests)
        {
            _requests[id] = request;
        }
        _stage = SecAggStage.Unmask;
        return requests;
    }

    /// <summary>Stage 4: records a client's revealed shares after checking each against its dealer's commitment.</summary>
    public void ReceiveUnmaskResponse(UnmaskResponseMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        RequireStage(SecAggStage.Unmask, "an unmask response");
        if (!_requests.TryGetValue(message.Sender, out UnmaskRequestMessage? request))
        {
            throw new UnknownParticipantException($"unmask response from client {message.Sender}, which was not asked (not a survivor).");
        }
        if (_responses.ContainsKey(message.Sender))
        {
            throw new DuplicateMessageException($"client {message.Sender} already answered the unmask request.");
        }
        // Only the shares that match their dealer's commitment are kept: a share that does not (a poisoned commitment,
        // or a holder's lie) is dropped and reported, not the whole response, so one hostile party cannot make the
        // server refuse an honest holder. Any t verified shares reconstruct a secret.
        List<RevealedShare> seeds = CheckRevealed(message.Sender, message.SelfMaskSeedShares, request.Survivors, SecAggCrypto.ShareKind.SelfMaskSeed);
        List<RevealedShare> keys = CheckRevealed(message.Sender, message.MaskKeyShares, request.Dropped, SecAggCrypto.ShareKind.MaskKey);
        _responses[message.Sender] = message with { SelfMaskSeedShares = seeds, MaskKeyShares = keys };
    }

    /// <summary>Revealed shares the server dropped because they did not match their dealer's commitment: (holder, owner).</summary>
    public IReadOnlyList<(int Holder, int Owner)> RejectedShares => _rejectedShares;
}
