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
/// file alone (never the system store) with the server name checked, and puts a deadline on every unary call. Given a
/// leader and its standbys, it talks to one at a time: a call that one answers UNAVAILABLE (unreachable, or a standby
/// saying it is not the leader) is made to the next, and the one that answers is kept for the calls after it.
/// </summary>
internal sealed class AdminConnection : IDisposable
{
    /// <summary>Deadline of each unary call.</summary>
    public static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);

    private readonly IReadOnlyList<Uri> _coordinators;
    private readonly FederationTrust _trust;
    // One channel per coordinator, opened the first time that coordinator is tried.
    private readonly MutualTlsChannel?[] _channels;
    private readonly X509Certificate2 _identity;
    private int _current;
    private bool _answered;

    private AdminConnection(IReadOnlyList<Uri> coordinators, X509Certificate2 identity, FederationTrust trust)
    {
        _coordinators = coordinators;
        _identity = identity;
        _trust = trust;
        _channels = new MutualTlsChannel?[coordinators.Count];
        Admin = new AdminService.AdminServiceClient(Channel.Channel);
    }

    /// <summary>The admin client of the coordinator in use (the leader once a call has been answered).</summary>
    public AdminService.AdminServiceClient Admin { get; private set; }

    /// <summary>The federation CA this connection trusts (also the anchor for verifying exports).</summary>
    public X509Certificate2 Ca => _trust.Ca;

    /// <summary>The coordinator this connection talks to.</summary>
    public string Address => Channel.Address.ToString();

    /// <summary>The role the identity's certificate carries (what the coordinator authorizes by); null when it names none.</summary>
    public FederationRole? Role => FederationRoleExtension.Read(_identity);

    /// <summary>The identity's common name, as the coordinator records it as the actor.</summary>
    public string Name => _identity.GetNameInfo(X509NameType.SimpleName, forIssuer: false);

    /// <summary>The coordinator's certificate from the validated handshake; null before the first call.</summary>
    public X509Certificate2? ServerCertificate => Channel.ServerCertificate;

    private MutualTlsChannel Channel => _channels[_current] ??= new MutualTlsChannel(_coordinators[_current], _identity, _trust);

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
        return new AdminConnection(endpoint.Coordinators, identity, trust);
    }

    /// <summary>Call options with the unary deadline (or none for a stream that ends on its own) and the caller's token.</summary>
    public static CallOptions Options(CancellationToken cancellationToken, TimeSpan? timeout) =>
        new(deadline: timeout is { } t ? DateTime.UtcNow + t : null, cancellationToken: cancellationToken);

    /// <summary>
    /// Runs a unary call; a refusal becomes an <see cref="AdminCallException"/>, Ctrl+C an <see cref="OperationCanceledException"/>.
    /// With several coordinators, an UNAVAILABLE answer sends the call to the next one (each is tried once per call), and
    /// when none answers as leader the exception names every address tried and why.
    /// </summary>
    /// <remarks>
    /// <paramref name="call"/> must read <see cref="Admin"/> each time it runs, so that a retry goes to the next coordinator.
    /// A standby refuses before doing anything, so the retry cannot repeat a change; only a leader that dies in the
    /// middle of a call leaves it unknown whether the call took effect, as a single coordinator would.
    /// </remarks>
    public async Task<T> CallAsync<T>(Func<CallOptions, AsyncUnaryCall<T>> call, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(call);
        int first = _current;
        List<string>? tried = null;
        while (true)
        {
            try
            {
                using AsyncUnaryCall<T> pending = call(Options(cancellationToken, CallTimeout));
                T response = await pending.ResponseAsync;
                _answered = true;
                return response;
            }
            catch (RpcException ex) when (_coordinators.Count > 1 && NotLeader(ex, cancellationToken) is { } why)
            {
                (tried ??= []).Add($"{_coordinators[_current].OriginalString} ({why})");
                Select((_current + 1) % _coordinators.Count);
                if (_current == first)
                {
                    throw new AdminCallException(StatusCode.Unavailable,
                        $"Unavailable: no coordinator answered as leader: {string.Join("; ", tried)}; check --coordinator and that the leader is running");
                }
            }
            catch (RpcException ex)
            {
                throw Failure(ex, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Before a stream, which is not moved to another coordinator once open: with several coordinators and none heard
    /// from yet, <paramref name="probe"/> (a unary call the caller's role may make) finds the leader. With one, nothing is sent.
    /// </summary>
    public async Task FindLeaderAsync<T>(Func<CallOptions, AsyncUnaryCall<T>> probe, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(probe);
        if (_coordinators.Count > 1 && !_answered)
        {
            await CallAsync(probe, cancellationToken);
        }
    }

    /// <summary>
    /// Why a failed call means "try the next coordinator": it could not reach this one, or this one is a standby (which
    /// answers UNAVAILABLE naming the leader). Null otherwise, and for a certificate this client refuses: a wrong CA is
    /// a mistake to report, not an outage to route around.
    /// </summary>
    private string? NotLeader(RpcException ex, CancellationToken cancellationToken) =>
        ex.StatusCode == StatusCode.Unavailable && !cancellationToken.IsCancellationRequested && Channel.ServerRefusal is null
            ? UserMessage.Cause(ex)
            : null;

    private void Select(int index)
    {
        _current = index;
        Admin = new AdminService.AdminServiceClient(Channel.Channel);
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
        if (Channel.ServerRefusal is { } refusal)
        {
            return new AdminCallException(StatusCode.Unavailable, $"Unavailable: cannot reach the coordinator at {Channel.Address} ({refusal})");
        }
        if (ex.StatusCode == StatusCode.Unavailable)
        {
            return new AdminCallException(ex.StatusCode, $"Unavailable: cannot reach the coordinator at {Channel.Address} ({UserMessage.Cause(ex)}); check --coordinator and that it is running");
        }
        return new AdminCallException(ex.StatusCode, $"{ex.StatusCode}: {OneLine(ex.Status.Detail)}");
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ").Trim();

    public void Dispose()
    {
        foreach (MutualTlsChannel? channel in _channels)
        {
            channel?.Dispose();
        }
        _identity.Dispose();
        _trust.Ca.Dispose();
        foreach (X509Certificate2 intermediate in _trust.Intermediates)
        {
            intermediate.Dispose();
        }
    }
}
