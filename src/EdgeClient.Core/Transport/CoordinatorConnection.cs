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

    /// <summary>Hears why this client refused the coordinator's TLS certificate (chain, name, revocation, expiry).</summary>
    public Action<string>? ServerRefused { get; init; }

    /// <summary>Hears each transient failure an idempotent call retries: the status detail and the wait before the next try.</summary>
    public Action<string, TimeSpan>? Retrying { get; init; }
}

/// <summary>
/// The coordinator's certificate no longer holds for this connection (revoked, or expired since the handshake): no
/// further call is made on it. <see cref="Rule"/> is certificate_revoked or certificate_expired.
/// </summary>
public sealed class CoordinatorRefusedException(string rule, string message) : Exception(message)
{
    public string Rule { get; } = rule;
}

/// <summary>
/// A mutual-TLS gRPC connection to the coordinator: presents the edge identity, trusts only the federation CA
/// with the server name checked, puts a deadline on every call and retries idempotent calls with backoff. The
/// coordinator's certificate is checked at the handshake and again before every call (expiry by the injected clock,
/// revocation by the newest CRL the edge has seen), since an HTTP/2 connection outlives both.
/// </summary>
public sealed class CoordinatorConnection : IDisposable
{
    private readonly MutualTlsChannel _channel;
    private readonly ConnectionOptions _options;
    private readonly TimeProvider _time;

    /// <param name="revocation">The edge's kept CRL (see <see cref="EdgeRevocationList"/>); null keeps one for this connection only.</param>
    public CoordinatorConnection(Uri coordinator, EdgeIdentity identity, ConnectionOptions? options = null, TimeProvider? time = null, EdgeRevocationList? revocation = null)
    {
        ArgumentNullException.ThrowIfNull(coordinator);
        ArgumentNullException.ThrowIfNull(identity);
        _options = options ?? new ConnectionOptions();
        _time = time ?? TimeProvider.System;
        Revocation = revocation ?? EdgeRevocationList.InMemory(identity.Ca);
        Microsoft.Extensions.Logging.ILogger? logger = _options.Logger;
        _channel = new MutualTlsChannel(coordinator, identity.Certificate, identity.Trust(_time, Revocation), new MutualTlsOptions
        {
            ConnectTimeout = _options.ConnectTimeout,
            TransportObserver = _options.TransportObserver,
            ServerRefused = reason =>
            {
                if (logger is not null)
                {
                    TransportLog.ServerRefused(logger, coordinator.ToString(), reason);
                }
                _options.ServerRefused?.Invoke(reason);
            },
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

    /// <summary>The newest CRL this edge has seen: what the coordinator's and the adapter signer's certificates are checked against.</summary>
    public EdgeRevocationList Revocation { get; }

    /// <summary>
    /// Call options with this connection's deadline (or <paramref name="timeout"/>) and the caller's token; every call
    /// goes through here, so a coordinator certificate that expired or was revoked since the handshake stops the call.
    /// </summary>
    /// <exception cref="CoordinatorRefusedException">The coordinator's certificate is revoked or outside its validity now.</exception>
    public CallOptions Call(CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        if (CoordinatorRefusal(_channel.Trust, ServerCertificate) is { } refused)
        {
            throw refused;
        }
        return new(deadline: _time.GetUtcNow().UtcDateTime + (timeout ?? _options.CallTimeout), cancellationToken: cancellationToken);
    }

    /// <summary>Why this connection's coordinator certificate must not be used any longer; null while it holds (or before the first handshake).</summary>
    public CoordinatorRefusedException? CoordinatorRefusal() => CoordinatorRefusal(_channel.Trust, ServerCertificate);

    /// <summary>The per-call check of the coordinator's certificate from the handshake against <paramref name="trust"/>'s clock and CRL.</summary>
    internal static CoordinatorRefusedException? CoordinatorRefusal(FederationTrust trust, X509Certificate2? server)
    {
        ArgumentNullException.ThrowIfNull(trust);
        if (server is null)
        {
            return null;
        }
        if (trust.IsRevoked(server, out string reason))
        {
            return new CoordinatorRefusedException(EdgeRevocationList.RevokedRule, $"the coordinator's certificate is refused: {reason}");
        }
        if (trust.IsExpired(server, out reason))
        {
            return new CoordinatorRefusedException(EdgeRevocationList.ExpiredRule, $"the coordinator's certificate is refused: {reason}");
        }
        return null;
    }

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
                TimeSpan wait = backoff.Next();
                _options.Retrying?.Invoke(UserMessage.Cause(ex), wait);
                await Task.Delay(wait, _time, cancellationToken);
            }
        }
    }

    public static bool IsTransient(StatusCode status) => status is StatusCode.Unavailable or StatusCode.DeadlineExceeded;

    public void Dispose() => _channel.Dispose();
}
