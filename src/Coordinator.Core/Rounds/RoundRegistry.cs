using System.Collections.Concurrent;
using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;
using Federated.Protos.V1;
using Federated.Trust;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// The rounds in progress (each with its instructions) and the invitations that heartbeats deliver to selected clients.
/// <paramref name="revocation"/> is the PKI folder's crl.pem, which every manifest carries so that edges check
/// certificates against it; null (a registry without a PKI folder, in tests) sends none.
/// </summary>
internal sealed class RoundRegistry(CoordinatorSigner signer, TimeProvider time, RevocationCache? revocation = null) : IDisposable
{
    private readonly ConcurrentDictionary<(string RunId, uint Round), (SecAggRound Round, RoundInstructions Instructions)> _rounds = new();
    private readonly ConcurrentDictionary<string, RoundRef> _invitations = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<(string RunId, string ClientId), ReportedRecordEpsilon> _recordEpsilons = new();

    /// <summary>
    /// Keeps what a participant reported of its own record-level epsilon with an upload, for run status only: it is the
    /// holder's unverified claim, never charged to any ledger. A later round's report replaces an earlier one.
    /// </summary>
    public void ReportRecordEpsilon(RoundRef round, string clientId, double epsilon, double delta) =>
        _recordEpsilons.AddOrUpdate((round.RunId, clientId),
            _ => new ReportedRecordEpsilon { ClientId = clientId, Round = round.Round, Epsilon = epsilon, Delta = delta },
            (_, previous) => previous.Round > round.Round ? previous : new ReportedRecordEpsilon { ClientId = clientId, Round = round.Round, Epsilon = epsilon, Delta = delta });

    /// <summary>The record-level epsilons the run's participants reported, by client id.</summary>
    public IReadOnlyList<ReportedRecordEpsilon> RecordEpsilons(string runId) =>
        [.. _recordEpsilons.Where(p => p.Key.RunId == runId).Select(p => p.Value).OrderBy(r => r.ClientId, StringComparer.Ordinal)];

    /// <summary>
    /// Opens a round: fresh graph seed from the CSPRNG, every participant invited; <paramref name="instructions"/> go into
    /// its manifests. Its stage deadlines run on <paramref name="clock"/> when given (tests drive them with a fake clock),
    /// else on the coordinator's.
    /// </summary>
    public SecAggRound Start(SecAggRoundPlan plan, RoundInstructions? instructions = null, TimeProvider? clock = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var round = new SecAggRound(plan, RandomNumberGenerator.GetBytes(32), clock ?? time);
        if (!_rounds.TryAdd((plan.RunId, (uint)plan.Round), (round, instructions ?? new RoundInstructions())))
        {
            round.Dispose();
            throw new InvalidOperationException($"round {plan.Round} of run {plan.RunId} already exists");
        }
        foreach (string participant in plan.Participants)
        {
            _invitations[participant] = round.Ref;
        }
        return round;
    }

    /// <summary>Forgets a finished round and its outstanding invitations.</summary>
    public void Finish(SecAggRound round)
    {
        ArgumentNullException.ThrowIfNull(round);
        if (_rounds.TryRemove((round.Plan.RunId, (uint)round.Plan.Round), out _))
        {
            foreach (string participant in round.Plan.Participants)
            {
                _invitations.TryRemove(new KeyValuePair<string, RoundRef>(participant, round.Ref));
            }
            round.Dispose();
        }
    }

    public RoundRef? InvitationFor(string clientId) => _invitations.TryGetValue(clientId, out RoundRef? invitation) ? invitation : null;

    /// <summary>The round a message names.</summary>
    /// <exception cref="MalformedMessageException">The reference lacks run_id or round.</exception>
    /// <exception cref="RoundNotInProgressException">The round is unknown, finished or replayed.</exception>
    public SecAggRound Find(RoundRef? reference)
    {
        if (reference is null || string.IsNullOrEmpty(reference.RunId) || reference.Round == 0)
        {
            throw new MalformedMessageException("round (run_id and round >= 1) is required");
        }
        return _rounds.TryGetValue((reference.RunId, reference.Round), out var live)
            ? live.Round
            : throw new RoundNotInProgressException($"round {reference.Round} of run '{reference.RunId}' is not in progress");
    }

    /// <summary>The signed manifest for one participant; its invitation is consumed.</summary>
    public GetRoundManifestResponse Manifest(SecAggRound round, string clientId)
    {
        ArgumentNullException.ThrowIfNull(round);
        RoundInstructions instructions = _rounds.TryGetValue((round.Plan.RunId, (uint)round.Plan.Round), out var live) ? live.Instructions : new RoundInstructions();
        GetRoundManifestResponse manifest = RoundManifests.Signed(round, instructions, clientId, signer, revocation is null ? [] : revocation.CurrentDer());
        _invitations.TryRemove(new KeyValuePair<string, RoundRef>(clientId, round.Ref));
        return manifest;
    }

    public void Decline(SecAggRound round, string clientId, long? lastChargedRound = null, string rule = "")
    {
        round.Decline(round.IndexOf(clientId), lastChargedRound, rule);
        _invitations.TryRemove(new KeyValuePair<string, RoundRef>(clientId, round.Ref));
    }

    public void Dispose()
    {
        foreach ((SecAggRound round, _) in _rounds.Values)
        {
            round.Dispose();
        }
        _rounds.Clear();
    }
}
