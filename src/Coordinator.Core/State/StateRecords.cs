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
    int RoundsParticipated,
    string? Population = null);

/// <summary>A client's own epsilon: every released round it contributed to, RDP composed per order, at its population's budget delta.</summary>
internal sealed record ClientPrivacy(double Epsilon, double Delta, int Rounds);

/// <summary>
/// A population's budget and its balance at the budget's delta: spent by released rounds, reserved by running runs
/// (what their reservations add to what is committed), and what remains for new runs.
/// </summary>
internal sealed record BudgetRecord(
    string Population, double Epsilon, double Delta, double EpsilonSpent, double EpsilonReserved, double EpsilonRemaining, string SetBy, DateTimeOffset SetAt);

/// <summary>
/// One charge of the privacy ledger. <paramref name="EpsilonAfter"/> is the run's own epsilon after the round, at the
/// run's <paramref name="Delta"/>; <paramref name="Rdp"/> is what the population's ledger composes (null only in rows
/// recorded before per-order accounting).
/// </summary>
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
    DateTimeOffset ChargedAt,
    RdpCharge? Rdp = null,
    string? Adjacency = null);

/// <summary>One round's RDP per order, as the pricing gave it.</summary>
internal sealed record RdpCharge(IReadOnlyList<double> Orders, IReadOnlyList<double> Values);

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
internal sealed record RoundCompletion(LedgerRecord Charge, StoredAdapter Adapter, IReadOnlyDictionary<string, ParticipantStatus> Statuses)
{
    /// <summary>False for a record-only run: the round is completed without a client-level ledger charge.</summary>
    public bool ClientLevel { get; init; } = true;
}

/// <summary>A round that ended (released or failed): who was selected, whose inputs were summed, the adapter it released and when it ran.</summary>
public sealed record EndedRound(int Round, int Selected, int Survivors, string? AdapterSha256After, DateTimeOffset StartedAt, DateTimeOffset EndedAt);

/// <summary>What a retention pass may remove: finished rounds' participant rows and adapters no run points at any more.</summary>
internal sealed record PrunePlan(DateTimeOffset Cutoff, IReadOnlyList<(string RunId, int Round)> Rounds, IReadOnlyList<string> Adapters)
{
    public bool IsEmpty => Rounds.Count == 0 && Adapters.Count == 0;
}
