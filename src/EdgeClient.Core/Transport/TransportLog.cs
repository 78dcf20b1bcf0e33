using Microsoft.Extensions.Logging;

namespace Federated.EdgeClient.Transport;

/// <summary>The edge transport's log events (source-generated); they never carry key material.</summary>
internal static partial class TransportLog
{
    [LoggerMessage(EventId = 2001, Level = LogLevel.Warning, Message = "Refused coordinator at {Address}: {Reason}")]
    public static partial void ServerRefused(ILogger logger, string address, string reason);
}
