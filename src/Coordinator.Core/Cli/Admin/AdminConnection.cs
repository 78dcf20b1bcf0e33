using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Protos.V1;
using Federated.Transport;
using Federated.Trust;
using Grpc.Core;

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

    private readonly MutualTlsChannel _channel;
    private readonly X509Certificate2 _identity;

    private AdminConnection(Uri coordinator, X509Certificate2 identity, FederationTrust trust)
    {
        _identity = identity;
        _channel = new MutualTlsChannel(coordinator, identity, trust);
        Admin = new AdminService.AdminServiceClient(_channel.Channel);
    }

    public AdminService.AdminServiceClient Admin { get; }

    /// <summary>The federation CA this connection trusts (also the anchor for verifying exports).</summary>
    public X509Certificate2 Ca => _channel.Trust.Ca;

    /// <summary>The coordinator this connection talks to.</summary>
    public string Address => _channel.Address.ToString();

    /// <summary>The role the identity's certificate carries (what the coordinator authorizes by); null when it names none.</summary>
    public FederationRole? Role => FederationRoleExtension.Read(_identity);

    /// <summary>The identity's common name, as the coordinator records it as the actor.</summary>
    public string Name => _identity.GetNameInfo(X509NameType.SimpleName, forIssuer: false);

    /// <summary>The coordinator's certificate from the validated handshake; null before the first call.</summary>
    public X509Certificate2? ServerCertificate => _channel.ServerCertificate;

    /// <summary>Loads the identity and CA; unreadable files, a wrong password or a foreign identity are usage errors.</summary>
    public static AdminConnection Open(AdminEndpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        FederationCaBundle ca;
        try
        {
            ca = FederationCaBundle.Load(endpoint.CaPath);
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
        var trust = new FederationTrust(ca.Root, TimeProvider.System, revocation: null, ca.Intermediates);
        // Checked here so a foreign identity gets a clear message instead of a failed handshake.
        if (!trust.TryBuildChain(identity, FederationTrust.ClientAuthOid, out string reason))
        {
            identity.Dispose();
            ca.Dispose();
            throw new UsageException($"--identity '{endpoint.IdentityPath}' is not an identity of the federation in --ca: {reason}");
        }
        return new AdminConnection(endpoint.Coordinator, identity, trust);
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
        if (_channel.ServerRefusal is { } refusal)
        {
            return new AdminCallException(StatusCode.Unavailable, $"Unavailable: cannot reach the coordinator at {_channel.Address} ({refusal})");
        }
        if (ex.StatusCode == StatusCode.Unavailable)
        {
            return new AdminCallException(ex.StatusCode, $"Unavailable: cannot reach the coordinator at {_channel.Address} ({UserMessage.Cause(ex)}); check --coordinator and that it is running");
        }
        return new AdminCallException(ex.StatusCode, $"{ex.StatusCode}: {OneLine(ex.Status.Detail)}");
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    public void Dispose()
    {
        _channel.Dispose();
        _identity.Dispose();
        _channel.Trust.Ca.Dispose();
        foreach (X509Certificate2 intermediate in _channel.Trust.Intermediates)
        {
            intermediate.Dispose();
        }
    }
}
