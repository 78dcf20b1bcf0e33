using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Federated.Protos.V1;
using Grpc.Core;
using Grpc.Net.Client;

namespace Federated.EdgeClient.Transport;

/// <summary>Timeouts of the edge client's calls.</summary>
internal sealed record ConnectionOptions
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
internal sealed class CoordinatorConnection : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly ConnectionOptions _options;
    private readonly TimeProvider _time;
    private X509Certificate2? _serverCertificate;

    public CoordinatorConnection(Uri coordinator, EdgeIdentity identity, ConnectionOptions? options = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(coordinator);
        ArgumentNullException.ThrowIfNull(identity);
        if (coordinator.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException($"coordinator URL '{coordinator}' must use https", nameof(coordinator));
        }
        _options = options ?? new ConnectionOptions();
        _time = time ?? TimeProvider.System;
        FederationCa = identity.Ca;
        TimeProvider clock = _time;
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = _options.ConnectTimeout,
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificates = [identity.Certificate],
                // Always present our identity, whatever CA list the server advertises.
                LocalCertificateSelectionCallback = (_, _, _, _, _) => identity.Certificate,
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                {
                    if (!FederationTrust.ValidateServer(identity.Ca, certificate, errors, clock, out string reason))
                    {
                        if (_options.Logger is { } logger)
                        {
                            TransportLog.ServerRefused(logger, coordinator.ToString(), reason);
                        }
                        return false;
                    }
                    // Kept to verify what the coordinator signs (manifests, adapters) with the key TLS authenticated.
                    Interlocked.Exchange(ref _serverCertificate, X509CertificateLoader.LoadCertificate(certificate!.GetRawCertData()))?.Dispose();
                    return true;
                },
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            },
        };
        if (_options.TransportObserver is { } observe)
        {
            handler.ConnectCallback = async (context, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(context.DnsEndPoint, ct);
                    return observe(new System.Net.Sockets.NetworkStream(socket, ownsSocket: true));
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        _channel = GrpcChannel.ForAddress(coordinator, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = 4 * 1024 * 1024,
        });
        Edge = new EdgeService.EdgeServiceClient(_channel);
    }

    public EdgeService.EdgeServiceClient Edge { get; }

    /// <summary>The federation CA this connection trusts (owned by the identity): what signed adapters must chain to.</summary>
    public X509Certificate2 FederationCa { get; }

    public ChannelBase Channel => _channel;

    /// <summary>The coordinator's certificate from the last validated TLS handshake; null before the first call.</summary>
    public X509Certificate2? ServerCertificate => Volatile.Read(ref _serverCertificate);

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

    public void Dispose()
    {
        _channel.Dispose();
        Interlocked.Exchange(ref _serverCertificate, null)?.Dispose();
    }
}
