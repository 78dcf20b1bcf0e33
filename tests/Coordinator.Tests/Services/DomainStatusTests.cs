using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Services;
using Grpc.Core;

namespace Federated.Coordinator.Tests.Services;

/// <summary>Each domain refusal reaches the caller as one gRPC status with the domain's message unchanged.</summary>
public sealed class DomainStatusTests
{
    public static TheoryData<Exception, StatusCode> Refusals => new()
    {
        { new InvalidPlanException("m"), StatusCode.InvalidArgument },
        { new BudgetRefusedException("m"), StatusCode.FailedPrecondition },
        { new UnknownRunException("m"), StatusCode.NotFound },
        { new RunEndedException("m"), StatusCode.FailedPrecondition },
        { new RunExportException("m", notFound: true), StatusCode.NotFound },
        { new RunExportException("m"), StatusCode.FailedPrecondition },
        { new RoundNotInProgressException("m"), StatusCode.FailedPrecondition },
        { new NotAParticipantException("m"), StatusCode.PermissionDenied },
        { new ParticipantNotLiveException("m"), StatusCode.FailedPrecondition },
        { new ParticipantDroppedException("m"), StatusCode.DeadlineExceeded },
        { new RoundFailedException("m"), StatusCode.Aborted },
        { new LeaseLostException("m"), StatusCode.Unavailable },
        { new ProtocolStageException("m"), StatusCode.FailedPrecondition },
        { new DuplicateMessageException("m"), StatusCode.FailedPrecondition },
        { new UnknownParticipantException("m"), StatusCode.InvalidArgument },
        { new MalformedMessageException("m"), StatusCode.InvalidArgument },
        { new ShareAuthenticationException("m"), StatusCode.InvalidArgument },
        { new InsufficientSurvivorsException("m"), StatusCode.Aborted },
        { new SecureAggregationException("m"), StatusCode.Aborted },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void ToRpc_DomainRefusal_OneStatusWithTheMessage(Exception refusal, StatusCode expected)
    {
        RpcException rpc = DomainStatus.ToRpc(refusal)!;

        Assert.Equal(expected, rpc.StatusCode);
        Assert.Equal("m", rpc.Status.Detail);
    }

    [Fact]
    public void ToRpc_NotARefusal_LeftAlone()
    {
        Assert.Null(DomainStatus.ToRpc(new InvalidOperationException("a bug")));
        Assert.Null(DomainStatus.ToRpc(new ArgumentException("a bug")));
    }
}
