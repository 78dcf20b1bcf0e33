using System.Threading.RateLimiting;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator.Security;

/// <summary>
/// Bounds what one caller can hold: at most <see cref="CoordinatorOptions.MaxConcurrentCallsPerIdentity"/> calls in
/// flight per certificate subject (more are refused with RESOURCE_EXHAUSTED), and a server-side deadline on every
/// call whether or not the client sent one: unary calls (stage long polls included) end after
/// <see cref="CoordinatorOptions.MaxUnaryCallSeconds"/>, streams after <see cref="CoordinatorOptions.MaxStreamSeconds"/>,
/// and a client stream that sends nothing for <see cref="CoordinatorOptions.StreamIdleSeconds"/> is ended; all three
/// with DEADLINE_EXCEEDED. Runs after <see cref="RoleAuthorizationInterceptor"/>, whose identity it keys on.
/// </summary>
internal sealed class CallLimitInterceptor : Interceptor, IDisposable
{
    private readonly PartitionedRateLimiter<string> _concurrency;
    private readonly CoordinatorOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<CallLimitInterceptor> _logger;

    public CallLimitInterceptor(CoordinatorOptions options, TimeProvider time, ILogger<CallLimitInterceptor> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options;
        _time = time;
        _logger = logger;
        _concurrency = PartitionedRateLimiter.Create<string, string>(caller => RateLimitPartition.GetConcurrencyLimiter(caller, _ => new ConcurrencyLimiterOptions
        {
            PermitLimit = options.MaxConcurrentCallsPerIdentity,
            QueueLimit = 0,
        }));
    }

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        using var capped = new CappedCallContext(context, TimeSpan.FromSeconds(_options.MaxUnaryCallSeconds), _time);
        try
        {
            return await continuation(request, capped);
        }
        catch (Exception ex) when (capped.Expired && IsCancellation(ex))
        {
            throw Exceeded(context, capped, $"the call exceeded the coordinator's limit of {_options.MaxUnaryCallSeconds} s");
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        using var capped = new CappedCallContext(context, TimeSpan.FromSeconds(_options.MaxStreamSeconds), _time);
        var reader = new IdleLimitedReader<TRequest>(requestStream, capped, TimeSpan.FromSeconds(_options.StreamIdleSeconds), _time);
        try
        {
            return await continuation(reader, capped);
        }
        catch (Exception ex) when ((capped.Expired || reader.Idle) && IsCancellation(ex))
        {
            throw Exceeded(context, capped, reader.Idle
                ? $"the stream sent no message for {_options.StreamIdleSeconds} s"
                : $"the stream exceeded the coordinator's limit of {_options.MaxStreamSeconds} s");
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        using var capped = new CappedCallContext(context, TimeSpan.FromSeconds(_options.MaxStreamSeconds), _time);
        try
        {
            await continuation(request, responseStream, capped);
        }
        catch (Exception ex) when (capped.Expired && IsCancellation(ex))
        {
            throw Exceeded(context, capped, $"the stream exceeded the coordinator's limit of {_options.MaxStreamSeconds} s");
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        using RateLimitLease lease = Acquire(context);
        using var capped = new CappedCallContext(context, TimeSpan.FromSeconds(_options.MaxStreamSeconds), _time);
        var reader = new IdleLimitedReader<TRequest>(requestStream, capped, TimeSpan.FromSeconds(_options.StreamIdleSeconds), _time);
        try
        {
            await continuation(reader, responseStream, capped);
        }
        catch (Exception ex) when ((capped.Expired || reader.Idle) && IsCancellation(ex))
        {
            throw Exceeded(context, capped, reader.Idle
                ? $"the stream sent no message for {_options.StreamIdleSeconds} s"
                : $"the stream exceeded the coordinator's limit of {_options.MaxStreamSeconds} s");
        }
    }

    /// <summary>Calls <paramref name="identity"/> has in progress now (status views; tests wait on it).</summary>
    public int CallsInProgress(string identity) =>
        _options.MaxConcurrentCallsPerIdentity - (int)(_concurrency.GetStatistics(identity)?.CurrentAvailablePermits ?? _options.MaxConcurrentCallsPerIdentity);

    public void Dispose() => _concurrency.Dispose();

    private static bool IsCancellation(Exception ex) =>
        ex is OperationCanceledException || (ex is RpcException rpc && rpc.StatusCode is StatusCode.Cancelled or StatusCode.DeadlineExceeded);

    private RpcException Exceeded(ServerCallContext context, CappedCallContext capped, string why)
    {
        CoordinatorLog.CallDeadlineExceeded(_logger, context.Method, capped.CallerName, why);
        return new RpcException(new Status(StatusCode.DeadlineExceeded, why));
    }

    private RateLimitLease Acquire(ServerCallContext context)
    {
        CallerIdentity caller = RoleAuthorizationInterceptor.Caller(context);
        RateLimitLease lease = _concurrency.AttemptAcquire(caller.Name);
        if (lease.IsAcquired)
        {
            return lease;
        }
        lease.Dispose();
        CoordinatorLog.ConcurrencyLimited(_logger, context.Method, caller.Name, _options.MaxConcurrentCallsPerIdentity);
        throw new RpcException(new Status(
            StatusCode.ResourceExhausted,
            $"'{caller.Name}' already has {_options.MaxConcurrentCallsPerIdentity} calls in progress, the most one identity may hold; retry when one ends"));
    }

    /// <summary>
    /// The call's context with a cancellation token that also fires at the server's cap, and the earlier of the two
    /// deadlines. Everything else is the original context's (its HttpContext is reachable through UserState, the
    /// documented fallback of GetHttpContext).
    /// </summary>
    private sealed class CappedCallContext : ServerCallContext, IDisposable
    {
        private const string HttpContextKey = "__HttpContext";
        private readonly ServerCallContext _inner;
        private readonly CancellationTokenSource _timer;
        private readonly CancellationTokenSource _cap;
        private readonly DateTime _deadline;

        public CappedCallContext(ServerCallContext inner, TimeSpan limit, TimeProvider time)
        {
            _inner = inner;
            inner.UserState[HttpContextKey] = inner.GetHttpContext();
            CallerName = RoleAuthorizationInterceptor.Caller(inner).Name;
            _timer = new CancellationTokenSource(limit, time);
            _cap = CancellationTokenSource.CreateLinkedTokenSource(inner.CancellationToken, _timer.Token);
            DateTime capped = time.GetUtcNow().UtcDateTime + limit;
            _deadline = inner.Deadline < capped ? inner.Deadline : capped;
        }

        public string CallerName { get; }

        /// <summary>
        /// True when the server's cap ended the call. Not "and the client did not abort": cancelling a blocked write
        /// makes grpc-dotnet reset the stream, which aborts the request as a consequence.
        /// </summary>
        public bool Expired => _timer.IsCancellationRequested;

        public CancellationToken Token => _cap.Token;

        public void Dispose()
        {
            _cap.Dispose();
            _timer.Dispose();
        }

        protected override string MethodCore => _inner.Method;

        protected override string HostCore => _inner.Host;

        protected override string PeerCore => _inner.Peer;

        protected override DateTime DeadlineCore => _deadline;

        protected override Metadata RequestHeadersCore => _inner.RequestHeaders;

        protected override CancellationToken CancellationTokenCore => _cap.Token;

        protected override Metadata ResponseTrailersCore => _inner.ResponseTrailers;

        protected override Status StatusCore
        {
            get => _inner.Status;
            set => _inner.Status = value;
        }

        protected override WriteOptions? WriteOptionsCore
        {
            get => _inner.WriteOptions;
            set => _inner.WriteOptions = value;
        }

        protected override AuthContext AuthContextCore => _inner.AuthContext;

        protected override IDictionary<object, object> UserStateCore => _inner.UserState;

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => _inner.CreatePropagationToken(options);

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => _inner.WriteResponseHeadersAsync(responseHeaders);
    }

    /// <summary>A request stream whose every read also ends when no message arrives within the idle limit.</summary>
    private sealed class IdleLimitedReader<T>(IAsyncStreamReader<T> inner, CappedCallContext context, TimeSpan idle, TimeProvider time) : IAsyncStreamReader<T>
    {
        public T Current => inner.Current;

        /// <summary>True when a read ended because the client sent nothing for the idle limit.</summary>
        public bool Idle { get; private set; }

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            // Cancels this read only; a timer that fires just as a message arrives leaves a read that succeeded, and
            // only a read that failed after the timer fired marks the stream idle.
            using var timer = new CancellationTokenSource(idle, time);
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, context.Token, timer.Token);
            try
            {
                return await inner.MoveNext(wait.Token);
            }
            catch (Exception ex) when (IsCancellation(ex) && timer.IsCancellationRequested)
            {
                Idle = true;
                throw new OperationCanceledException("the stream was idle", ex, wait.Token);
            }
        }
    }
}
