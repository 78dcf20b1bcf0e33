using Federated.Aggregation.SecureAggregation;
using Grpc.Core;

namespace Federated.Coordinator.Rounds;

/// <summary>Maps SecAgg+ protocol rejections to the gRPC status a client should see.</summary>
internal static class SecAggStatus
{
    public static RpcException ToRpc(SecureAggregationException ex) => ex switch
    {
        ProtocolStageException => new RpcException(new Status(StatusCode.FailedPrecondition, ex.Message)),
        DuplicateMessageException => new RpcException(new Status(StatusCode.FailedPrecondition, ex.Message)),
        // SecAggRound refuses callers that are not selected (PERMISSION_DENIED) or no longer live (FAILED_PRECONDITION)
        // before the session sees them, so here the unknown participant is one a field of the message names.
        UnknownParticipantException => new RpcException(new Status(StatusCode.InvalidArgument, ex.Message)),
        MalformedMessageException => new RpcException(new Status(StatusCode.InvalidArgument, ex.Message)),
        ShareAuthenticationException => new RpcException(new Status(StatusCode.InvalidArgument, ex.Message)),
        InsufficientSurvivorsException => new RpcException(new Status(StatusCode.Aborted, ex.Message)),
        _ => new RpcException(new Status(StatusCode.Aborted, ex.Message)),
    };
}
