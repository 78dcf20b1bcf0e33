using Federated.Coordinator.Security;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Services;

/// <summary>The edge service: maps messages to the state store and, later, the round orchestrator. Callers are role-checked clients.</summary>
internal sealed class EdgeGrpcService(CoordinatorState state, CoordinatorOptions options, TimeProvider time, ILogger<EdgeGrpcService> logger) : EdgeService.EdgeServiceBase
{
    private const int MaxVersionLength = 64;
    private const int MaxDeviceLength = 16;

    public override Task<RegisterResponse> Register(RegisterRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        string version = RequireText(request.ClientVersion, "client_version", MaxVersionLength);
        string device = RequireText(request.Device, "device", MaxDeviceLength);
        state.RegisterClient(caller.Name, caller.CertificateSha256, version, device);
        CoordinatorLog.ClientRegistered(logger, caller.Name, version, device, caller.CertificateSha256);
        return Task.FromResult(new RegisterResponse
        {
            ClientId = caller.Name,
            HeartbeatIntervalSeconds = (uint)options.HeartbeatIntervalSeconds,
            ServerTime = Timestamp.FromDateTimeOffset(time.GetUtcNow()),
        });
    }

    public override Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        if (!state.Heartbeat(caller.Name, request.Available))
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, $"client '{caller.Name}' is not registered; call Register first"));
        }
        CoordinatorLog.Heartbeat(logger, caller.Name, request.Available);
        return Task.FromResult(new HeartbeatResponse { HeartbeatIntervalSeconds = (uint)options.HeartbeatIntervalSeconds });
    }

    private static string RequireText(string value, string field, int maxLength)
    {
        if (value.Length > maxLength)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} is {value.Length} characters; at most {maxLength} are allowed"));
        }
        if (value.Any(char.IsControl))
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"{field} contains control characters"));
        }
        return value;
    }
}
