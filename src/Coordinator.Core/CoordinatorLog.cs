using Microsoft.Extensions.Logging;

namespace Federated.Coordinator;

/// <summary>The coordinator's log events: source-generated, with stable event ids; they never carry key material or updates.</summary>
internal static partial class CoordinatorLog
{
    [LoggerMessage(EventId = 1000, Level = LogLevel.Information, Message = "Coordinator listening on {Address} (HTTP/2, TLS 1.2+, client certificates required), state {State}")]
    public static partial void Listening(ILogger logger, string address, string state);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Critical, Message = "Stopping: {Reason}; nothing more is served until the coordinator starts again with its state reachable")]
    public static partial void StateLost(ILogger logger, string reason);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Information, Message = "Prometheus metrics at {Uri} (plain HTTP, no client data)")]
    public static partial void MetricsListening(ILogger logger, string uri);

    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning, Message = "Refused TLS client: {Reason}")]
    public static partial void ClientCertificateRefused(ILogger logger, string reason);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Warning, Message = "Denied {Method} to {Caller} with role {Role}: allowed roles are {Allowed}")]
    public static partial void PermissionDenied(ILogger logger, string method, string caller, string role, string allowed);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "Refused {Method}: {Reason}")]
    public static partial void Unauthenticated(ILogger logger, string method, string reason);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Warning, Message = "Rate-limited {Method} from {Caller}: more than {Calls} calls per {PeriodSeconds} s")]
    public static partial void RateLimited(ILogger logger, string method, string caller, int calls, int periodSeconds);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information, Message = "Renewed the certificate of {Caller}: serial {Serial}, valid until {NotAfter:O}")]
    public static partial void CertificateRenewed(ILogger logger, string caller, string serial, DateTime notAfter);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Warning,
        Message = "The root CA key {Path} is on the coordinator host: serve does not use it, but whoever controls this host can mint identities with it; move it offline (mv it to the security officer's medium) and pass --root-key FILE to 'pki issue' and 'pki revoke'")]
    public static partial void RootKeyOnline(ILogger logger, string path);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Warning, Message = "Ended {Method} from {Caller}: {Reason}")]
    public static partial void CallDeadlineExceeded(ILogger logger, string method, string caller, string reason);

    [LoggerMessage(EventId = 1011, Level = LogLevel.Warning, Message = "Refused {Method} from {Caller}: already {Limit} calls in progress")]
    public static partial void ConcurrencyLimited(ILogger logger, string method, string caller, int limit);

    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "Client {ClientId} registered (version {Version}, device {Device}, certificate {Thumbprint})")]
    public static partial void ClientRegistered(ILogger logger, string clientId, string version, string device, string thumbprint);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Debug, Message = "Heartbeat from {ClientId} (available {Available})")]
    public static partial void Heartbeat(ILogger logger, string clientId, bool available);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Client {ClientId} declined round {Round} of run {RunId}: {Reason} {Detail}")]
    public static partial void RoundDeclined(ILogger logger, string clientId, string runId, int round, string reason, string detail);

    [LoggerMessage(EventId = 1700, Level = LogLevel.Error, Message = "Stored adapter {Sha256} cannot be read: {Reason}")]
    public static partial void AdapterUnreadable(ILogger logger, string sha256, string reason);

    [LoggerMessage(EventId = 1701, Level = LogLevel.Information, Message = "Retention: pruned {Rounds} rounds and {Adapters} adapters finished before {Cutoff:O}")]
    public static partial void RetentionPruned(ILogger logger, int rounds, int adapters, DateTimeOffset cutoff);

    [LoggerMessage(EventId = 1702, Level = LogLevel.Error, Message = "Retention: pruning failed: {Reason}")]
    public static partial void RetentionFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 1200, Level = LogLevel.Information, Message = "Budget of population {Population} set to epsilon {Epsilon}, delta {Delta} by {Actor}")]
    public static partial void BudgetSet(ILogger logger, string population, double epsilon, double delta, string actor);

    [LoggerMessage(EventId = 1900, Level = LogLevel.Warning, Message = "Leader: took the lease (token {Token}), resumed {Runs} runs, serving at {Address}")]
    public static partial void LeaseTaken(ILogger logger, long token, int runs, string address);

    [LoggerMessage(EventId = 1901, Level = LogLevel.Information, Message = "Standby at {Address}: {Detail}; serving health only until the lease is free")]
    public static partial void StandingBy(ILogger logger, string address, string detail);

    [LoggerMessage(EventId = 1902, Level = LogLevel.Critical, Message = "Lost the leader lease: {Reason}; stopping (a restart comes back as a standby)")]
    public static partial void LeaseLost(ILogger logger, string reason);

    [LoggerMessage(EventId = 1903, Level = LogLevel.Warning, Message = "Standby: cannot read the leader lease: {Reason}; polling on")]
    public static partial void LeasePollFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 1904, Level = LogLevel.Warning, Message = "Leader: could not renew the lease: {Reason}; retrying")]
    public static partial void LeaseRenewFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 1905, Level = LogLevel.Information, Message = "Leader: released the lease at shutdown")]
    public static partial void LeaseReleased(ILogger logger);

    [LoggerMessage(EventId = 1906, Level = LogLevel.Error, Message = "Fence: {Reason}; nothing of it was committed")]
    public static partial void WriteRefused(ILogger logger, string reason);
}
