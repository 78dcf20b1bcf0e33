using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Security;
using Federated.Protos.V1;
using Grpc.Core;
using Grpc.Net.Client;

namespace Federated.Coordinator.Cli;

/// <summary>An admin call the coordinator refused or could not serve; the CLI prints the one-line message and exits 1.</summary>
internal sealed class AdminCallException(StatusCode status, string message) : Exception(message)
{
    public StatusCode Status { get; } = status;
}

/// <summary>
/// The admin CLI's mutual-TLS gRPC channel: presents the engineer's or officer's identity, trusts the federation CA
/// file alone (never the system store) with the server name checked, and puts a deadline on every unary call.
/// </summary>
internal sealed class AdminConnection : IDisposable
{
    /// <summary>Deadline of each unary call.</summary>
    public static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);

    private readonly GrpcChannel _channel;
    private readonly X509Certificate2 _identity;
    private readonly X509Certificate2 _ca;
    private readonly Uri _coordinator;
    private X509Certificate2? _serverCertificate;
    private string? _serverRefusal;

    private AdminConnection(Uri coordinator, X509Certificate2 identity, X509Certificate2 ca)
    {
        _coordinator = coordinator;
        _identity = identity;
        _ca = ca;
        var validator = new FederationCertificateValidator(ca, TimeProvider.System);
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(10),
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificates = [identity],
                LocalCertificateSelectionCallback = (_, _, _, _, _) => identity,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                {
                    if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
                    {
                        _serverRefusal = "the coordinator presented no certificate";
                        return false;
                    }
                    if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
                    {
                        _serverRefusal = $"the coordinator's certificate '{certificate.Subject}' does not name the host '{coordinator.Host}'";
                        return false;
                    }
                    // RemoteCertificateChainErrors is expected (the platform does not trust the private CA); our own chain replaces it.
                    X509Certificate2 server = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
                    if (!validator.TryBuildChain(server, FederationCertificateValidator.ServerAuthOid, out string reason))
                    {
                        server.Dispose();
                        _serverRefusal = $"the coordinator's certificate is not from this federation: {reason}";
                        return false;
                    }
                    // Kept to verify what the coordinator signs with the key TLS authenticated (the audit head).
                    Interlocked.Exchange(ref _serverCertificate, server)?.Dispose();
                    return true;
                },
            },
        };
        _channel = GrpcChannel.ForAddress(coordinator, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            // An export chunk is at most 1 MiB of data plus its framing.
            MaxReceiveMessageSize = 4 * 1024 * 1024,
        });
        Admin = new AdminService.AdminServiceClient(_channel);
    }

    public AdminService.AdminServiceClient Admin { get; }

    /// <summary>The federation CA this connection trusts (also the anchor for verifying exports).</summary>
    public X509Certificate2 Ca => _ca;

    /// <summary>The coordinator's certificate from the validated handshake; null before the first call.</summary>
    public X509Certificate2? ServerCertificate => Volatile.Read(ref _serverCertificate);

    /// <summary>Loads the identity and CA; unreadable files, a wrong password or a foreign identity are usage errors.</summary>
    public static AdminConnection Open(AdminEndpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        X509Certificate2 ca;
        try
        {
            ca = X509CertificateLoader.LoadCertificateFromFile(endpoint.CaPath);
        }
        catch (CryptographicException ex)
        {
            throw new UsageException($"--ca '{endpoint.CaPath}' is not a certificate file: {ex.Message}");
        }
        X509Certificate2 identity;
        try
        {
            identity = X509CertificateLoader.LoadPkcs12FromFile(endpoint.IdentityPath, endpoint.Password);
        }
        catch (CryptographicException ex)
        {
            ca.Dispose();
            throw new UsageException($"--identity '{endpoint.IdentityPath}' cannot be read (wrong --password-file or not PKCS#12): {ex.Message}");
        }
        if (!identity.HasPrivateKey)
        {
            identity.Dispose();
            ca.Dispose();
            throw new UsageException($"--identity '{endpoint.IdentityPath}' holds no private key");
        }
        // Checked here so a foreign identity gets a clear message instead of a failed handshake.
        if (!new FederationCertificateValidator(ca, TimeProvider.System).TryBuildChain(identity, FederationCertificateValidator.ClientAuthOid, out string reason))
        {
            identity.Dispose();
            ca.Dispose();
            throw new UsageException($"--identity '{endpoint.IdentityPath}' is not an identity of the federation in --ca: {reason}");
        }
        return new AdminConnection(endpoint.Coordinator, identity, ca);
    }

    /// <summary>Call options with the unary deadline (or none for a stream that ends on its own) and the caller's token.</summary>
    public static CallOptions Options(CancellationToken cancellationToken, TimeSpan? timeout) =>
        new(deadline: timeout is { } t ? DateTime.UtcNow + t : null, cancellationToken: cancellationToken);

    /// <summary>Runs a unary call; a refusal becomes an <see cref="AdminCallException"/>, Ctrl+C an <see cref="OperationCanceledException"/>.</summary>
    public async Task<T> CallAsync<T>(Func<CallOptions, AsyncUnaryCall<T>> call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        try
        {
            using AsyncUnaryCall<T> pending = call(Options(cancellationToken, CallTimeout));
            return await pending.ResponseAsync;
        }
        catch (RpcException ex)
        {
            throw Failure(ex, cancellationToken);
        }
    }

    /// <summary>Maps a failed call to what the CLI reports: the status name and the server's detail in one line.</summary>
    public Exception Failure(RpcException ex, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ex);
        if (cancellationToken.IsCancellationRequested && ex.StatusCode == StatusCode.Cancelled)
        {
            return new OperationCanceledException("interrupted", ex, cancellationToken);
        }
        // A refused server certificate surfaces as INTERNAL or UNAVAILABLE depending on where the handshake broke.
        if (_serverRefusal is { } refusal)
        {
            return new AdminCallException(StatusCode.Unavailable, $"Unavailable: cannot reach the coordinator at {_coordinator} ({refusal})");
        }
        if (ex.StatusCode == StatusCode.Unavailable)
        {
            return new AdminCallException(ex.StatusCode, $"Unavailable: cannot reach the coordinator at {_coordinator} ({OneLine(ex.Status.Detail)})");
        }
        return new AdminCallException(ex.StatusCode, $"{ex.StatusCode}: {OneLine(ex.Status.Detail)}");
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    public void Dispose()
    {
        _channel.Dispose();
        _identity.Dispose();
        _ca.Dispose();
        Interlocked.Exchange(ref _serverCertificate, null)?.Dispose();
    }
}
