using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Federated.Coordinator.Services;

/// <summary>
/// The standby gate: while this coordinator does not lead (<see cref="Leadership.Serving"/>), every call but the health
/// service's is refused with UNAVAILABLE and "standby; the leader is ADDRESS", which is what makes a client with a list
/// of coordinators try the next one. Health calls pass (they report NOT_SERVING) and carry the leader's address in the
/// <c>federated-leader</c> trailer.
/// </summary>
internal sealed class StandbyInterceptor(Leadership leadership) : Interceptor
{
    /// <summary>The trailer naming the leader's address on a standby's health answers.</summary>
    public const string LeaderTrailer = "federated-leader";

    private const string HealthPrefix = "/grpc.health.v1.Health/";

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return continuation(request, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return continuation(requestStream, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return continuation(request, responseStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context,
        DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Admit(context);
        return continuation(requestStream, responseStream, context);
    }

    private void Admit(ServerCallContext context)
    {
        if (leadership.Serving)
        {
            return;
        }
        if (context.Method.StartsWith(HealthPrefix, StringComparison.Ordinal))
        {
            if (leadership.LeaderAddress is { } leader)
            {
                context.ResponseTrailers.Add(LeaderTrailer, leader);
            }
            return;
        }
        throw new RpcException(new Status(StatusCode.Unavailable, leadership.StandbyDetail));
    }
}
