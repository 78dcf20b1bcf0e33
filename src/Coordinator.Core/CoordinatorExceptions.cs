namespace Federated.Coordinator;

/// <summary>
/// Base of the coordinator's domain refusals. The domain throws these (and the SecAgg+ protocol's own exceptions);
/// Services.DomainStatus maps each kind to one gRPC status, so no transport type reaches the domain.
/// </summary>
internal abstract class CoordinatorException(string message) : Exception(message);

/// <summary>A run plan (or what follows from it: calibration, the base model, the threshold) the coordinator cannot accept.</summary>
internal sealed class InvalidPlanException(string message) : CoordinatorException(message);

/// <summary>A plan the officer's budget does not allow, or a population without a budget.</summary>
internal sealed class BudgetRefusedException(string message) : CoordinatorException(message);

/// <summary>A run id this coordinator does not know.</summary>
internal sealed class UnknownRunException(string message) : CoordinatorException(message);

/// <summary>An action on a run that has already ended.</summary>
internal sealed class RunEndedException(string message) : CoordinatorException(message);

/// <summary>A message names a round that is not in progress here (unknown, finished or replayed).</summary>
internal sealed class RoundNotInProgressException(string message) : CoordinatorException(message);

/// <summary>The caller is not one of the round's selected participants.</summary>
internal sealed class NotAParticipantException(string message) : CoordinatorException(message);

/// <summary>A participant that declined or was dropped at an earlier stage tried to take part again.</summary>
internal sealed class ParticipantNotLiveException(string message) : CoordinatorException(message);

/// <summary>A participant missed a stage's deadline and was dropped from the round.</summary>
internal sealed class ParticipantDroppedException(string message) : CoordinatorException(message);

/// <summary>The round failed (too few survivors, a protocol failure) or was aborted; it releases nothing and charges nothing.</summary>
internal sealed class RoundFailedException(string message) : CoordinatorException(message);

/// <summary>
/// A write refused by the leader lease's fence: this coordinator is a standby, or another coordinator took the lease
/// over (it was paused, or cut off from the database). Nothing of the write was committed.
/// </summary>
internal sealed class LeaseLostException(string message) : CoordinatorException(message);

/// <summary>
/// The state database cannot be reached (lost while serving, or unreachable): nothing of the write that met it is
/// acknowledged, and the coordinator stops serving rather than answering from memory.
/// </summary>
internal sealed class StateUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
