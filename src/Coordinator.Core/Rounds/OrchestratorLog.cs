using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Rounds;

/// <summary>Log messages of the orchestrator (never an update's values).</summary>
internal static partial class OrchestratorLog
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "round {Round} of run {RunId} failed and released nothing: {Reason}")]
    public static partial void RoundFailed(ILogger logger, string runId, int round, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "round {Round} of run {RunId} skipped: {Reason}")]
    public static partial void RoundSkipped(ILogger logger, string runId, int round, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "run {RunId} failed: {Reason}")]
    public static partial void RunFailed(ILogger logger, string runId, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "round {Round} of run {RunId} was in progress when the coordinator stopped; it is recorded as failed (nothing released, nothing charged)")]
    public static partial void RoundInterrupted(ILogger logger, string runId, int round);

    [LoggerMessage(Level = LogLevel.Information, Message = "run {RunId} resumed after {Released} of {Planned} released rounds from adapter {AdapterSha256}")]
    public static partial void RunResumed(ILogger logger, string runId, int released, int planned, string adapterSha256);

    [LoggerMessage(Level = LogLevel.Warning, Message = "participants of round {Round} of run {RunId} were already charged for rounds up to {UpTo} (a replay: was the coordinator's state restored from an older backup?); the next round is numbered {Next}")]
    public static partial void RoundsReplayed(ILogger logger, string runId, int round, long upTo, int next);

    [LoggerMessage(Level = LogLevel.Warning, Message = "round {Round} of run {RunId}: the share of {Owner} revealed by {Holder} did not match {Owner}'s commitment and was dropped (a poisoned commitment or a lying holder)")]
    public static partial void ShareRejected(ILogger logger, string runId, int round, string holder, string owner);
}
