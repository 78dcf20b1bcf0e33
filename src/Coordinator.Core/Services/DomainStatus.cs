using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.Rounds;
using Grpc.Core;

namespace Federated.Coordinator.Services;

/// <summary>The one mapping from the domain's refusals (coordinator and SecAgg+ protocol) to the gRPC status a caller sees.</summary>
internal static class DomainStatus
{
    /// <summary>The status for a domain exception; null for an exception that is not a domain refusal (a bug stays a bug).</summary>
    public static RpcException? ToRpc(Exception exception) => exception switch
    {
        InvalidPlanException => Status(StatusCode.InvalidArgument, exception),
        BudgetRefusedException => Status(StatusCode.FailedPrecondition, exception),
        UnknownRunException => Status(StatusCode.NotFound, exception),
        RunEndedException => Status(StatusCode.FailedPrecondition, exception),
        RunExportException { NotFound: true } => Status(StatusCode.NotFound, exception),
        RunExportException => Status(StatusCode.FailedPrecondition, exception),
        RoundNotInProgressException => Status(StatusCode.FailedPrecondition, exception),
        NotAParticipantException => Status(StatusCode.PermissionDenied, exception),
        ParticipantNotLiveException => Status(StatusCode.FailedPrecondition, exception),
        ParticipantDroppedException => Status(StatusCode.DeadlineExceeded, exception),
        RoundFailedException => Status(StatusCode.Aborted, exception),
        // A standby or deposed leader: UNAVAILABLE is what tells a client to try the next coordinator of its list.
        LeaseLostException => Status(StatusCode.Unavailable, exception),
        ProtocolStageException => Status(StatusCode.FailedPrecondition, exception),
        DuplicateMessageException => Status(StatusCode.FailedPrecondition, exception),
        // SecAggRound refuses callers that are not selected (PERMISSION_DENIED) or no longer live (FAILED_PRECONDITION)
        // before the session sees them, so here the unknown participant is one a field of the message names.
        UnknownParticipantException => Status(StatusCode.InvalidArgument, exception),
        MalformedMessageException => Status(StatusCode.InvalidArgument, exception),
        ShareAuthenticationException => Status(StatusCode.InvalidArgument, exception),
        InsufficientSurvivorsException => Status(StatusCode.Aborted, exception),
        SecureAggregationException => Status(StatusCode.Aborted, exception),
        StateUnavailableException => Status(StatusCode.Unavailable, exception),
        _ => null,
    };

    private static RpcException Status(StatusCode code, Exception exception) => new(new Status(code, exception.Message));
}
