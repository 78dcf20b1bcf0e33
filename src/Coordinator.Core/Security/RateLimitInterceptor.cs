using System.Globalization;
using System.Threading.RateLimiting;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Security;

/// <summary>
/// Per-identity rate limit: a token bucket per certificate subject (so one noisy or hostile client exhausts only
/// its own bucket, never the server's), refusing calls beyond it with RESOURCE_EXHAUSTED and the time to retry.
/// Runs after <see cref="RoleAuthorizationInterceptor"/>, whose identity it keys on.
/// </summary>
internal sealed class RateLimitInterceptor : Interceptor, IDisposable
{
    private readonly PartitionedRateLimiter<string> _limiter;
    private readonly ILogger<RateLimitInterceptor> _logger;
    private readonly CoordinatorOptions _options;
    private readonly Telemetry.CoordinatorMetrics? _metrics;

    public RateLimitInterceptor(CoordinatorOptions options, ILogger<RateLimitInterceptor> logger, Telemetry.CoordinatorMetrics? metrics = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options;
        _logger = logger;
        _metrics = metrics;
        _limiter = PartitionedRateLimiter.Create<string, string>(caller => RateLimitPartition.GetTokenBucketLimiter(caller, _ => new TokenBucketRateLimiterOptions
        {
            TokenLimit = options.RateLimitBurst,
            TokensPerPeriod = options.RateLimitCalls,
            ReplenishmentPeriod = TimeSpan.FromSeconds(options.RateLimitPeriodSeconds),
            QueueLimit = 0,
            AutoReplenishment = true,
        }));
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        return continuation(request, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        return continuation(requestStream, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        return continuation(request, responseStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        return continuation(requestStream, responseStream, context);
    }

    public void Dispose() => _limiter.Dispose();

    // A token bucket lease holds nothing to release: the token is spent when the call is admitted.
    private RateLimitLease Acquire(ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        RateLimitLease lease = _limiter.AttemptAcquire(caller.Name);
        if (lease.IsAcquired)
        {
            return lease;
        }
        string retry = lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan after)
            ? after.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture) + " s"
            : "later";
        lease.Dispose();
        _metrics?.RateLimited(context.Method);
        CoordinatorLog.RateLimited(_logger, context.Method, caller.Name, _options.RateLimitCalls, _options.RateLimitPeriodSeconds);
        throw new RpcException(new Status(
            StatusCode.ResourceExhausted,
            $"'{caller.Name}' exceeded its rate limit of {_options.RateLimitCalls} calls per {_options.RateLimitPeriodSeconds} s (burst {_options.RateLimitBurst}); retry after {retry}"));
    }
}
