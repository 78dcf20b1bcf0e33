namespace Federated.Coordinator;

/// <summary>The coordinator host's settings (section "Coordinator" of appsettings.json, FEDERATED_ environment variables, then flags).</summary>
public sealed class CoordinatorOptions
{
    internal const string Section = "Coordinator";

    /// <summary>Folder written by `pki init`: ca.crt and server.pfx.</summary>
    public string Pki { get; set; } = "";

    /// <summary>TCP port; 0 picks a free one (tests).</summary>
    public int Port { get; set; } = 7443;

    /// <summary>Address to listen on: loopback unless set (0.0.0.0 or a host address to serve edge clients on other machines).</summary>
    public string Address { get; set; } = "127.0.0.1";

    /// <summary>
    /// Where the state lives: a SQLite file path, or a PostgreSQL connection string (Host=...;Database=...) or
    /// postgresql:// URI. Holds the password when the connection string does: log <see cref="StateLocation"/> instead.
    /// </summary>
    public string State { get; set; } = "coordinator.db";

    /// <summary><see cref="State"/> parsed; its ToString never shows the password.</summary>
    internal State.StateLocation StateLocation => Federated.Coordinator.State.StateLocation.Parse(State);

    /// <summary>The default of <see cref="TrainingSecondsPerStep"/>.</summary>
    public const double DefaultTrainingSecondsPerStep = 1;

    /// <summary>
    /// Seconds of local training allowed per local step: a round's first deadline is the run's local steps times this
    /// plus its stage timeout, so 600 steps on a slow client are not cut at a fixed minute.
    /// </summary>
    public double TrainingSecondsPerStep { get; set; } = DefaultTrainingSecondsPerStep;

    /// <summary>How often edge clients are asked to send heartbeats.</summary>
    public int HeartbeatIntervalSeconds { get; set; } = 10;

    /// <summary>Calls each identity (certificate subject) may make per period once its burst is spent.</summary>
    public int RateLimitCalls { get; set; } = 100;

    /// <summary>The rate limit's replenishment period in seconds.</summary>
    public int RateLimitPeriodSeconds { get; set; } = 1;

    /// <summary>Calls an identity may make at once before the per-period rate applies.</summary>
    public int RateLimitBurst { get; set; } = 200;

    /// <summary>Server-side deadline of every unary call, stage long polls included, whatever deadline the client sent.</summary>
    public int MaxUnaryCallSeconds { get; set; } = 600;

    /// <summary>Server-side deadline of every streaming call (uploads, downloads, watches).</summary>
    public int MaxStreamSeconds { get; set; } = 3600;

    /// <summary>A client stream that sends no message for this long is ended.</summary>
    public int StreamIdleSeconds { get; set; } = 60;

    /// <summary>Concurrent HTTP/2 streams one connection may open (Kestrel's SETTINGS_MAX_CONCURRENT_STREAMS).</summary>
    public int MaxStreamsPerConnection { get; set; } = 64;

    /// <summary>Calls one identity may have in progress at once, over all its connections.</summary>
    public int MaxConcurrentCallsPerIdentity { get; set; } = 32;

    /// <summary>Lifetime of certificates renewed through IdentityService/Renew (short-lived by design).</summary>
    public int RenewedCertificateDays { get; set; } = 30;

    /// <summary>
    /// Key file (base64 of 32 random bytes, owner-only; `pki init` writes at-rest.key) under which stored adapters are
    /// encrypted with AES-256-GCM; empty stores them in plaintext.
    /// </summary>
    public string AtRestKey { get; set; } = "";

    /// <summary>Port of the Prometheus scrape endpoint (plain HTTP, path /metrics); null serves none; 0 picks a free one (tests).</summary>
    public int? MetricsPort { get; set; }

    /// <summary>Address of the scrape endpoint: loopback unless set.</summary>
    public string MetricsAddress { get; set; } = "127.0.0.1";

    /// <summary>Days a finished round's adapter and participant rows are kept; 0 keeps them forever.</summary>
    public int RetentionDays { get; set; }

    /// <summary>
    /// Seconds the leader lease lasts after each renewal when coordinators share a PostgreSQL state (renewed four times
    /// per lease; a standby polls every second): a killed leader is replaced within about this long plus a second.
    /// </summary>
    public double LeaseSeconds { get; set; } = Federated.Coordinator.State.LeaseTiming.DefaultSeconds;

    /// <summary>
    /// The https://host:port a leader stores in the lease, for standbys to name in their refusals; empty uses the bound
    /// address (the host name when listening on 0.0.0.0 or ::).
    /// </summary>
    public string AdvertisedAddress { get; set; } = "";

    /// <summary>Checks every value once, naming the value and the allowed range.</summary>
    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(Pki))
        {
            throw new ArgumentException("the PKI folder is not set: pass --pki DIR or set Coordinator:Pki");
        }
        if (Port is < 0 or > 65535)
        {
            throw new ArgumentOutOfRangeException(nameof(Port), Port, "port must be in 0..65535");
        }
        if (!System.Net.IPAddress.TryParse(Address, out _))
        {
            throw new ArgumentException($"address '{Address}' is not an IP address");
        }
        if (MetricsPort is < 0 or > 65535)
        {
            throw new ArgumentOutOfRangeException(nameof(MetricsPort), MetricsPort, "metrics port must be in 0..65535");
        }
        if (!System.Net.IPAddress.TryParse(MetricsAddress, out _))
        {
            throw new ArgumentException($"metrics address '{MetricsAddress}' is not an IP address");
        }
        if (MetricsPort is { } metrics && metrics != 0 && metrics == Port && MetricsAddress == Address)
        {
            throw new ArgumentException($"the metrics port {metrics} is the gRPC port; choose another --metrics-port");
        }
        if (string.IsNullOrWhiteSpace(State))
        {
            throw new ArgumentException("the state file is not set: pass --state FILE or set Coordinator:State");
        }
        _ = StateLocation;
        if (!(TrainingSecondsPerStep is >= 0 and <= 3600))
        {
            throw new ArgumentOutOfRangeException(nameof(TrainingSecondsPerStep), TrainingSecondsPerStep, "seconds per local step must be in 0..3600");
        }
        if (HeartbeatIntervalSeconds is < 1 or > 3600)
        {
            throw new ArgumentOutOfRangeException(nameof(HeartbeatIntervalSeconds), HeartbeatIntervalSeconds, "heartbeat interval must be in 1..3600 seconds");
        }
        if (RenewedCertificateDays is < 1 or > 365)
        {
            throw new ArgumentOutOfRangeException(nameof(RenewedCertificateDays), RenewedCertificateDays, "renewed certificate lifetime must be in 1..365 days");
        }
        if (RetentionDays is < 0 or > 36_500)
        {
            throw new ArgumentOutOfRangeException(nameof(RetentionDays), RetentionDays, "retention must be in 0..36500 days (0 keeps every round)");
        }
        if (RateLimitCalls is < 1 or > 1_000_000)
        {
            throw new ArgumentOutOfRangeException(nameof(RateLimitCalls), RateLimitCalls, "rate limit calls must be in 1..1000000 per period");
        }
        if (RateLimitPeriodSeconds is < 1 or > 86_400)
        {
            throw new ArgumentOutOfRangeException(nameof(RateLimitPeriodSeconds), RateLimitPeriodSeconds, "rate limit period must be in 1..86400 seconds");
        }
        if (MaxUnaryCallSeconds is < 1 or > 86_400)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxUnaryCallSeconds), MaxUnaryCallSeconds, "maximum unary call time must be in 1..86400 seconds");
        }
        if (MaxStreamSeconds is < 1 or > 86_400)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxStreamSeconds), MaxStreamSeconds, "maximum stream time must be in 1..86400 seconds");
        }
        if (StreamIdleSeconds < 1 || StreamIdleSeconds > MaxStreamSeconds)
        {
            throw new ArgumentOutOfRangeException(nameof(StreamIdleSeconds), StreamIdleSeconds, $"stream idle time must be in 1..{MaxStreamSeconds} seconds (the maximum stream time)");
        }
        if (MaxStreamsPerConnection is < 1 or > 10_000)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxStreamsPerConnection), MaxStreamsPerConnection, "streams per connection must be in 1..10000");
        }
        if (MaxConcurrentCallsPerIdentity is < 1 or > 100_000)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxConcurrentCallsPerIdentity), MaxConcurrentCallsPerIdentity, "concurrent calls per identity must be in 1..100000");
        }
        if (!(LeaseSeconds is >= Federated.Coordinator.State.LeaseTiming.MinSeconds and <= Federated.Coordinator.State.LeaseTiming.MaxSeconds))
        {
            throw new ArgumentOutOfRangeException(nameof(LeaseSeconds), LeaseSeconds, $"the lease must be in {Federated.Coordinator.State.LeaseTiming.MinSeconds}..{Federated.Coordinator.State.LeaseTiming.MaxSeconds} seconds");
        }
        if (AdvertisedAddress.Length > 0
            && !(Uri.TryCreate(AdvertisedAddress, UriKind.Absolute, out Uri? advertised) && advertised.Scheme == Uri.UriSchemeHttps && advertised.AbsolutePath == "/" && advertised.Query.Length == 0))
        {
            throw new ArgumentException($"advertised address '{AdvertisedAddress}' is not an https://HOST:PORT address");
        }
        if (RateLimitBurst < RateLimitCalls || RateLimitBurst > 1_000_000)
        {
            throw new ArgumentOutOfRangeException(nameof(RateLimitBurst), RateLimitBurst, $"rate limit burst must be in {RateLimitCalls} (the calls per period)..1000000");
        }
    }
}
