namespace Federated.Coordinator.State;

/// <summary>A registered edge client as the state store holds it.</summary>
internal sealed record ClientRecord(
    string ClientId,
    string CertificateSha256,
    string ClientVersion,
    string Device,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LastSeenAt,
    bool Available,
    int RoundsParticipated);

/// <summary>A population's budget and what the ledger has charged against it.</summary>
internal sealed record BudgetRecord(string Population, double Epsilon, double Delta, double EpsilonSpent, string SetBy, DateTimeOffset SetAt);

/// <summary>One charge of the privacy ledger.</summary>
internal sealed record LedgerRecord(
    long Sequence,
    string RunId,
    int Round,
    string Population,
    double EpsilonAfter,
    double EpsilonDelta,
    double Delta,
    int Mechanism,
    double NoiseMultiplier,
    double ClipNorm,
    int Participants,
    DateTimeOffset ChargedAt);

/// <summary>A run as the state store holds it: the serialized RunPlan the engineer started, its progress and its latest global adapter.</summary>
internal sealed record RunRecord(
    string RunId,
    byte[] Plan,
    string Population,
    Protos.V1.RunState State,
    double PlannedEpsilon,
    double NoiseMultiplier,
    int CurrentRound,
    string AdapterSha256,
    string Detail,
    string CreatedBy,
    DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt);

/// <summary>How far a run got: its highest round number, the rounds released (charged) and the epsilon they spent.</summary>
internal sealed record RunProgress(int LastRound, int ReleasedRounds, double EpsilonSpent);

/// <summary>A global adapter whose bytes are durable in the adapter store: its hash, size and CMS signature, ready to be recorded.</summary>
internal sealed record StoredAdapter(string Sha256, long SizeBytes, byte[] Signature);

/// <summary>What completing a round writes: the ledger charge, the round's new global adapter and every participant's final status.</summary>
internal sealed record RoundCompletion(LedgerRecord Charge, StoredAdapter Adapter, IReadOnlyDictionary<string, ParticipantStatus> Statuses);

/// <summary>A round that ended (released or failed): who was selected, whose inputs were summed, the adapter it released and when it ran.</summary>
public sealed record EndedRound(int Round, int Selected, int Survivors, string? AdapterSha256After, DateTimeOffset StartedAt, DateTimeOffset EndedAt);

/// <summary>What a retention pass may remove: finished rounds' participant rows and adapters no run points at any more.</summary>
internal sealed record PrunePlan(DateTimeOffset Cutoff, IReadOnlyList<(string RunId, int Round)> Rounds, IReadOnlyList<string> Adapters)
{
    public bool IsEmpty => Rounds.Count == 0 && Adapters.Count == 0;
}
