using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;
using Grpc.Net.Client;

namespace Federated.Transport;

/// <summary>Settings of a <see cref="MutualTlsChannel"/>.</summary>
public sealed record MutualTlsOptions
{
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Largest message accepted from the coordinator: an adapter or export chunk is at most 1 MiB of data plus framing.</summary>
    public int MaxReceiveMessageBytes { get; init; } = 4 * 1024 * 1024;

    /// <summary>Called with the reason each time the coordinator's certificate is refused (for the caller's log).</summary>
    public Action<string>? ServerRefused { get; init; }

    /// <summary>Optional wrapper of the raw TCP stream (below TLS), e.g. to count the bytes on the wire.</summary>
    public Func<Stream, Stream>? TransportObserver { get; init; }
}

/// <summary>
/// The one way anything in the federation dials the coordinator: HTTP/2 over TLS 1.2/1.3 presenting a federation
/// identity whatever CA list the server advertises, trusting the coordinator's certificate only through
/// <see cref="FederationTrust.TryValidateServer"/> (never the system store), with keep-alive pings so a dead peer is noticed.
/// </summary>
public sealed class MutualTlsChannel : IDisposable
{
    private readonly GrpcChannel _channel;
    private X509Certificate2? _serverCertificate;
    private string? _serverRefusal;

    /// <param name="identity">The certificate with private key to present; owned by the caller.</param>
    /// <param name="trust">The federation trust the coordinator's certificate must pass; its CA is owned by the caller.</param>
    public MutualTlsChannel(Uri address, X509Certificate2 identity, FederationTrust trust, MutualTlsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(address);
        ArgumentNullException.ThrowIfNull(identity);
        ArgumentNullException.ThrowIfNull(trust);
        if (address.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException($"coordinator URL '{address}' must use https", nameof(address));
        }
        options ??= new MutualTlsOptions();
        Address = address;
        Trust = trust;
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = options.ConnectTimeout,
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificates = [identity],
                // Always present our identity, whatever CA list the server advertises.
                LocalCertificateSelectionCallback = (_, _, _, _, _) => identity,
                // Revocation is the federation trust's job (the CA-signed crl.pem); no online lookups for a private CA.
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                {
                    if (!trust.TryValidateServer(certificate, errors, out X509Certificate2? server, out string reason))
                    {
                        Volatile.Write(ref _serverRefusal, reason);
                        options.ServerRefused?.Invoke(reason);
                        return false;
                    }
                    Interlocked.Exchange(ref _serverCertificate, server)?.Dispose();
                    return true;
                },
            },
        };
        if (options.TransportObserver is { } observe)
        {
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    return observe(new NetworkStream(socket, ownsSocket: true));
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        _channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = options.MaxReceiveMessageBytes,
        });
    }

    /// <summary>The coordinator's address.</summary>
    public Uri Address { get; }

    /// <summary>The trust the coordinator's certificate was checked against.</summary>
    public FederationTrust Trust { get; }

    public GrpcChannel Channel => _channel;

    /// <summary>The coordinator's certificate from the last validated handshake; null before the first call.</summary>
    public X509Certificate2? ServerCertificate => Volatile.Read(ref _serverCertificate);

    /// <summary>Why the coordinator's certificate was last refused; null when it never was.</summary>
    public string? ServerRefusal => Volatile.Read(ref _serverRefusal);

    public void Dispose()
    {
        _channel.Dispose();
        Interlocked.Exchange(ref _serverCertificate, null)?.Dispose();
    }
}
