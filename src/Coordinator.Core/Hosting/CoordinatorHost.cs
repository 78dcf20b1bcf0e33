using System.Net;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Grpc.AspNetCore.Server.Model;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Security;
using Federated.Coordinator.Services;
using Federated.Coordinator.State;
using Federated.Coordinator.Storage;
using Federated.Trust;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Federated.Coordinator;

/// <summary>
/// The coordinator's gRPC host: Kestrel with HTTP/2 over TLS 1.2/1.3, client certificates required and
/// validated against the federation CA only, roles enforced per RPC, state in SQLite or PostgreSQL.
/// </summary>
public sealed class CoordinatorHost : IAsyncDisposable
{
    /// <summary>Largest gRPC message accepted; upload chunks are capped well below it by the SecAgg parameters.</summary>
    internal const int MaxReceiveMessageBytes = 4 * 1024 * 1024;

    private readonly WebApplication _app;
    private readonly CoordinatorState _state;
    private readonly FederationCaBundle _ca;
    private readonly X509Certificate2 _serverCertificate;

    private readonly AtRestCipher? _cipher;
    private readonly SharedStateLease? _shared;
    private LeaderElection? _election;

    private CoordinatorHost(WebApplication app, CoordinatorState state, FederationCaBundle ca, X509Certificate2 serverCertificate, AtRestCipher? cipher, SharedStateLease? shared)
    {
        _cipher = cipher;
        _shared = shared;
        _app = app;
        _state = state;
        _ca = ca;
        _serverCertificate = serverCertificate;
    }

    /// <summary>Exports a run's adapter as a signed PEFT folder with its provenance.</summary>
    internal RunExporter Exporter => _app.Services.GetRequiredService<RunExporter>();

    /// <summary>The coordinator's durable state.</summary>
    public CoordinatorState State => _state;

    /// <summary>The rounds in progress (the orchestrator opens rounds here).</summary>
    internal RoundRegistry Rounds => _app.Services.GetRequiredService<RoundRegistry>();

    /// <summary>The signed global adapters.</summary>
    public AdapterStore Adapters => _app.Services.GetRequiredService<AdapterStore>();

    internal IServiceProvider Services => _app.Services;

    /// <summary>Whether this coordinator serves or stands by (always serving on SQLite).</summary>
    internal Leadership Leadership => _app.Services.GetRequiredService<Leadership>();

    /// <summary>Why this coordinator stopped after losing the leader lease; null unless it did (serve then exits non-zero).</summary>
    public string? LeadershipLost { get; private set; }

    /// <summary>The bound https address (with the real port when 0 was asked for); valid after <see cref="StartAsync"/>.</summary>
    public Uri Address => new(Addresses().First(a => a.StartsWith("https://", StringComparison.Ordinal)));

    /// <summary>The Prometheus scrape URL (http://address:port/metrics); null without `--metrics-port`. Valid after <see cref="StartAsync"/>.</summary>
    public Uri? MetricsUri => Addresses().FirstOrDefault(a => a.StartsWith("http://", StringComparison.Ordinal)) is { } http
        ? new Uri(new Uri(http), Telemetry.CoordinatorTelemetry.ScrapePath)
        : null;

    private ICollection<string> Addresses() => _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;

    public static CoordinatorHost Create(CoordinatorOptions options, Action<ILoggingBuilder>? configureLogging = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        time ??= TimeProvider.System;
        string pki = Path.GetFullPath(options.Pki);
        string caPath = Path.Combine(pki, FederationPki.CaCertificateFile);
        string serverPath = Path.Combine(pki, FederationPki.ServerName + ".pfx");
        if (!File.Exists(caPath) || !File.Exists(serverPath))
        {
            throw new FileNotFoundException($"PKI folder '{pki}' lacks {FederationPki.CaCertificateFile} or {FederationPki.ServerName}.pfx (run 'coordinator pki init --out {pki}')");
        }
        // Serve reads public trust (ca.crt: the root and the renewal intermediate), its own identities, the CRL and the
        // intermediate's key; never the root key (ca.key), whose holder could mint identities and sign CRLs.
        FederationCaBundle bundle = FederationCaBundle.Load(caPath);
        X509Certificate2 ca = bundle.Root;
        X509Certificate2 server = X509CertificateLoader.LoadPkcs12FromFile(serverPath, password: null);
        var revocation = new RevocationCache(Path.Combine(pki, RevocationList.FileName), ca);
        var trust = new FederationTrust(ca, time, revocation, bundle.Intermediates);
        if (!trust.TryBuildChain(server, FederationTrust.ServerAuthOid, out string serverProblem))
        {
            throw new InvalidOperationException($"the server certificate in '{serverPath}' is not usable: {serverProblem}");
        }
        AtRestCipher? cipher = string.IsNullOrEmpty(options.AtRestKey) ? null : AtRestCipher.FromKeyFile(options.AtRestKey);
        AdapterSigner adapterSigner;
        CoordinatorState state;
        try
        {
            adapterSigner = AdapterSigner.Load(pki, ca);
        }
        catch
        {
            cipher?.Dispose();
            throw;
        }
        try
        {
            state = CoordinatorState.Open(options.StateLocation, server, time);
        }
        catch
        {
            adapterSigner.Dispose();
            cipher?.Dispose();
            throw;
        }

        SharedStateLease? shared = null;
        try
        {
            // A PostgreSQL state may be shared with standbys: from here on every write needs the leader lease.
            shared = SharedStateLease.For(state, options);
            Leadership leadership = shared is null ? Leadership.Sole(time) : Leadership.Shared(time, shared.Lease.Timing.Duration);
            WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ApplicationName = typeof(CoordinatorHost).Assembly.GetName().Name });
            // Under systemd: journald-formatted console logs and the service manager's lifetime (no-op elsewhere).
            builder.Host.UseSystemd();
            builder.Logging.ClearProviders();
            if (configureLogging is null && Microsoft.Extensions.Hosting.Systemd.SystemdHelpers.IsSystemdService())
            {
                // journald: one entry per message with its syslog priority prefix.
                builder.Logging.AddSystemdConsole();
            }
            else if (configureLogging is null)
            {
                builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
            }
            else
            {
                configureLogging(builder.Logging);
            }

            if (shared is not null)
            {
                // A standby answers health NOT_SERVING by design: the health service's error line per probe would flood the log.
                builder.Logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks.DefaultHealthCheckService", LogLevel.Critical);
            }

            ILogger? tlsLogger = null;
            Telemetry.CoordinatorMetrics? tlsMetrics = null;
            builder.WebHost.ConfigureKestrel(kestrel =>
            {
                kestrel.AddServerHeader = false;
                kestrel.Limits.Http2.MaxStreamsPerConnection = options.MaxStreamsPerConnection;
                kestrel.Listen(IPAddress.Parse(options.Address), options.Port, listen =>
                {
                    listen.Protocols = HttpProtocols.Http2;
                    listen.UseHttps(new HttpsConnectionAdapterOptions
                    {
                        ServerCertificate = server,
                        SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                        ClientCertificateMode = ClientCertificateMode.RequireCertificate,
                        // Revocation is the validator's job (the CA-signed crl.pem); no online lookups for a private CA.
                        CheckCertificateRevocation = false,
                        ClientCertificateValidation = (certificate, _, _) =>
                        {
                            // The platform's chain and errors are ignored on purpose: they consult system roots.
                            if (trust.TryValidateClient(certificate, out _, out string reason))
                            {
                                return true;
                            }
                            if (tlsLogger is not null)
                            {
                                CoordinatorLog.ClientCertificateRefused(tlsLogger, reason);
                            }
                            tlsMetrics?.TlsRefused(trust.RefusalKind(certificate));
                            return false;
                        },
                    });
                });
                Telemetry.CoordinatorTelemetry.Listen(kestrel, options);
            });

            builder.Services.AddSingleton(options);
            builder.Services.AddSingleton(time);
            builder.Services.AddSingleton(leadership);
            builder.Services.AddSingleton(trust);
            // The same CRL the handshake checks travels in every round manifest (the edges check the coordinator and the adapter signer).
            builder.Services.AddSingleton(revocation);
            builder.Services.AddSingleton(state);
            var signer = new CoordinatorSigner(server);
            builder.Services.AddSingleton(signer);
            builder.Services.AddSingleton(adapterSigner);
            var adapters = AdapterStore.For(state, adapterSigner, cipher);
            adapters.CheckKey();
            builder.Services.AddSingleton(adapters);
            builder.Services.AddSingleton(new RunExporter(state, adapters, adapterSigner.Certificate, time));
            builder.Services.AddSingleton<RetentionPruner>();
            builder.Services.AddHostedService(services => services.GetRequiredService<RetentionPruner>());
            builder.Services.AddSingleton<RoundRegistry>();
            builder.Services.AddSingleton(new CertificateRenewer(FederationPki.LoadRenewalIntermediate(pki, time), TimeSpan.FromDays(options.RenewedCertificateDays)));
            // One limiter for the host's lifetime: interceptors are otherwise created per call.
            builder.Services.AddSingleton<RateLimitInterceptor>();
            builder.Services.AddSingleton<CallLimitInterceptor>();
            builder.Services.AddSingleton<DomainStatusInterceptor>();
            builder.Services.AddSingleton<StandbyInterceptor>();
            builder.Services.AddSingleton<RunOrchestrator>();
            Telemetry.CoordinatorTelemetry.AddServices(builder.Services, options);
            builder.Services.AddGrpc(grpc =>
            {
                // Outermost: every call's duration and final status, refusals by the interceptors below included.
                grpc.Interceptors.Add<Telemetry.RpcMetricsInterceptor>();
                grpc.Interceptors.Add<RoleAuthorizationInterceptor>();
                // A standby refuses every authorized call but health with UNAVAILABLE, before it counts against any limit.
                grpc.Interceptors.Add<StandbyInterceptor>();
                // After the role check, so the bucket is keyed by an authenticated identity.
                grpc.Interceptors.Add<RateLimitInterceptor>();
                // Then the call limits, so that the service sees the capped deadline and cancellation token.
                grpc.Interceptors.Add<CallLimitInterceptor>();
                // Innermost: the domain's refusals become statuses before any other interceptor sees them.
                grpc.Interceptors.Add<DomainStatusInterceptor>();
                grpc.MaxReceiveMessageSize = MaxReceiveMessageBytes;
                grpc.EnableDetailedErrors = false;
            });
            builder.Services.AddGrpcHealthChecks()
                .AddCheck("state", () =>
                    state.SchemaVersion == StateSchema.Migrations.Length ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy("state schema is not current"))
                .AddCheck("leader", () => leadership.Serving ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy(leadership.StandbyDetail));
            // Replaces grpc-dotnet's default binder so that unparseable requests get INVALID_ARGUMENT, not UNKNOWN.
            builder.Services.RemoveAll(typeof(IServiceMethodProvider<>));
            builder.Services.AddSingleton(typeof(IServiceMethodProvider<>), typeof(ParseCheckingMethodProvider<>));

            WebApplication app = builder.Build();
            tlsLogger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Federated.Coordinator.Tls");
            tlsMetrics = app.Services.GetRequiredService<Telemetry.CoordinatorMetrics>();
            Telemetry.CoordinatorTelemetry.MapEndpoint(app, options);
            string rootKey = Path.Combine(pki, FederationPki.CaKeyFile);
            if (File.Exists(rootKey))
            {
                // Only its existence is checked: serve never opens it.
                CoordinatorLog.RootKeyOnline(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Federated.Coordinator"), rootKey);
            }
            app.MapGrpcService<EdgeGrpcService>();
            app.MapGrpcService<AdminGrpcService>();
            app.MapGrpcService<IdentityGrpcService>();
            app.MapGrpcHealthChecksService();
            return new CoordinatorHost(app, state, bundle, server, cipher, shared);
        }
        catch
        {
            shared?.Dispose();
            state.Dispose();
            adapterSigner.Dispose();
            cipher?.Dispose();
            throw;
        }
    }

    /// <summary>Why the coordinator stopped serving because its state database was lost; null while it was not.</summary>
    public string? StateLostReason => _state.Database.LostReason;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        RunOrchestrator orchestrator = _app.Services.GetRequiredService<RunOrchestrator>();
        ILogger logger = _app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Federated.Coordinator");
        // A state database lost while serving stops the coordinator: it never answers from memory what it can no
        // longer record (the round in progress committed nothing, so it charged nothing), and the service manager
        // restarts it against whatever the database holds.
        _state.Database.Lost += reason =>
        {
            CoordinatorLog.StateLost(logger, reason);
            _app.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        };
        if (_shared is null)
        {
            // Runs that were in progress when the coordinator last stopped continue before any client is served.
            orchestrator.Resume();
        }
        else
        {
            _shared.Lease.Refused = reason => CoordinatorLog.WriteRefused(logger, reason);
            await _shared.PrepareAsync(cancellationToken);
        }
        await _app.StartAsync(cancellationToken);
        CoordinatorOptions options = _app.Services.GetRequiredService<CoordinatorOptions>();
        if (_shared is not null)
        {
            // Listening as a standby (health only) until the lease is taken; then the runs resume and calls are served.
            _shared.Lease.Advertise(AdvertisedAddress(options));
            IHostApplicationLifetime lifetime = _app.Services.GetRequiredService<IHostApplicationLifetime>();
            _election = new LeaderElection(_shared.Lease, Leadership, () => orchestrator.Resume().Count, reason =>
            {
                LeadershipLost = reason;
                // Its rounds stop now (their last writes are refused); then the host stops and serve exits non-zero.
                orchestrator.Halt();
                lifetime.StopApplication();
            }, _app.Services.GetRequiredService<TimeProvider>(), logger);
            _election.Start();
            await _election.FirstAttempt.WaitAsync(cancellationToken);
        }
        CoordinatorLog.Listening(logger, Address.ToString(), _state.Location.Display);
        if (MetricsUri is { } metrics)
        {
            CoordinatorLog.MetricsListening(logger, metrics.ToString());
        }
        // Type=notify units: the service is up once it listens.
        ServiceNotifier.Ready($"listening on {Address}");
    }

    internal Task WaitForShutdownAsync(CancellationToken cancellationToken) => _app.WaitForShutdownAsync(cancellationToken);

    /// <summary>What the lease names this coordinator by: the configured address, else the bound one (the host name for a wildcard bind).</summary>
    private string AdvertisedAddress(CoordinatorOptions options)
    {
        if (options.AdvertisedAddress.Length > 0)
        {
            return options.AdvertisedAddress.TrimEnd('/');
        }
        Uri bound = Address;
        bool wildcard = IPAddress.TryParse(options.Address, out IPAddress? ip) && (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any));
        string host = wildcard ? System.Net.Dns.GetHostName() : bound.Host;
        return new UriBuilder(Uri.UriSchemeHttps, host, bound.Port).Uri.GetLeftPart(UriPartial.Authority);
    }

    public async ValueTask DisposeAsync()
    {
        ILogger logger = _app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Federated.Coordinator");
        try
        {
            await _app.StopAsync();
        }
        finally
        {
            // Registered as an instance, so the container does not dispose it (and the CA key it holds).
            _app.Services.GetRequiredService<CertificateRenewer>().Dispose();
            _app.Services.GetRequiredService<AdapterSigner>().Dispose();
            // The orchestrator's last writes (interrupted rounds) go in while the lease is still renewed; then it is released.
            await _app.DisposeAsync();
            if (_election is not null)
            {
                await _election.DisposeAsync();
            }
            if (_shared is not null)
            {
                await _shared.ReleaseAsync(logger);
                _shared.Dispose();
            }
            _state.Dispose();
            _ca.Dispose();
            _serverCertificate.Dispose();
            _cipher?.Dispose();
        }
    }
}
