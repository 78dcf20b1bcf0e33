using System.Security.Cryptography.X509Certificates;
using Federated.Protos.V1;
using Federated.Transport;
using Federated.Trust;
using Grpc.Core;

namespace Federated.EdgeClient.Transport;

/// <summary>Timeouts of the edge client's calls.</summary>
public sealed record ConnectionOptions
{
    /// <summary>Deadline of each unary call that is not a stage long poll.</summary>
    public TimeSpan CallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(500);

    public TimeSpan MaximumBackoff { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Retries of an idempotent call after a transient failure before the error surfaces (0 = retry until cancelled).</summary>
    public int MaxRetries { get; init; } = 8;

    /// <summary>Where refused coordinator certificates are logged (with the reason); null logs nothing.</summary>
    public Microsoft.Extensions.Logging.ILogger? Logger { get; init; }

    /// <summary>Optional wrapper of the raw TCP stream (below TLS), e.g. to count the bytes on the wire.</summary>
    public Func<Stream, Stream>? TransportObserver { get; init; }
}

/// <summary>
/// A mutual-TLS gRPC connection to the coordinator: presents the edge identity, trusts only the federation CA
/// with the server name checked, puts a deadline on every call and retries idempotent calls with backoff.
/// </summary>
public sealed class CoordinatorConnection : IDisposable
{
    private readonly MutualTlsChannel _channel;
    private readonly ConnectionOptions _options;
    private readonly TimeProvider _time;

    public CoordinatorConnection(Uri coordinator, EdgeIdentity identity, ConnectionOptions? options = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(coordinator);
        ArgumentNullException.ThrowIfNull(identity);
        _options = options ?? new ConnectionOptions();
        _time = time ?? TimeProvider.System;
        Microsoft.Extensions.Logging.ILogger? logger = _options.Logger;
        _channel = new MutualTlsChannel(coordinator, identity.Certificate, new FederationTrust(identity.Ca, _time), new MutualTlsOptions
        {
            ConnectTimeout = _options.ConnectTimeout,
            TransportObserver = _options.TransportObserver,
            ServerRefused = logger is null ? null : reason => TransportLog.ServerRefused(logger, coordinator.ToString(), reason),
        });
        Edge = new EdgeService.EdgeServiceClient(_channel.Channel);
        ClientCertificate = identity.Certificate;
    }

    /// <summary>This client's identity certificate (with its private key): what its SecAgg+ keys are signed with.</summary>
    public X509Certificate2 ClientCertificate { get; }

    /// <summary>The federation trust this connection checks certificates with: what peers' roster certificates must pass too.</summary>
    public FederationTrust Trust => _channel.Trust;

    public EdgeService.EdgeServiceClient Edge { get; }

    /// <summary>The federation CA this connection trusts (owned by the identity): what signed adapters must chain to.</summary>
    public X509Certificate2 FederationCa => _channel.Trust.Ca;

    public ChannelBase Channel => _channel.Channel;

    /// <summary>The coordinator's certificate from the last validated TLS handshake; null before the first call.</summary>
    public X509Certificate2? ServerCertificate => _channel.ServerCertificate;

    /// <summary>Call options with this connection's deadline (or <paramref name="timeout"/>) and the caller's token.</summary>
    public CallOptions Call(CancellationToken cancellationToken, TimeSpan? timeout = null) =>
        new(deadline: _time.GetUtcNow().UtcDateTime + (timeout ?? _options.CallTimeout), cancellationToken: cancellationToken);

    public async Task<RegisterResponse> RegisterAsync(RegisterRequest request, CancellationToken cancellationToken) =>
        await RetryAsync(ct => Edge.RegisterAsync(request, Call(ct)).ResponseAsync, cancellationToken);

    public async Task<HeartbeatResponse> HeartbeatAsync(HeartbeatRequest request, CancellationToken cancellationToken) =>
        await RetryAsync(ct => Edge.HeartbeatAsync(request, Call(ct)).ResponseAsync, cancellationToken);

    /// <summary>
    /// Runs an idempotent call, retrying after transient failures (coordinator unreachable, connection reset,
    /// deadline) with exponential backoff and jitter; other errors (refused, invalid) surface at once.
    /// </summary>
    public async Task<T> RetryAsync<T>(Func<CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        var backoff = new ReconnectBackoff(_options.InitialBackoff, _options.MaximumBackoff);
        while (true)
        {
            try
            {
                return await call(cancellationToken);
            }
            catch (RpcException ex) when (IsTransient(ex.StatusCode) && !cancellationToken.IsCancellationRequested
                && (_options.MaxRetries == 0 || backoff.Attempt < _options.MaxRetries))
            {
                await Task.Delay(backoff.Next(), _time, cancellationToken);
            }
        }
    }

    public static bool IsTransient(StatusCode status) => status is StatusCode.Unavailable or StatusCode.DeadlineExceeded;

    public void Dispose() => _channel.Dispose();
}
