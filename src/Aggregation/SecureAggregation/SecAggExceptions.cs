namespace Federated.Aggregation.SecureAggregation;

/// <summary>Base type of every SecAgg+ protocol error; the session stays usable unless it says it failed.</summary>
public class SecureAggregationException : Exception
{
    /// <summary>Creates the exception with a message naming what is wrong.</summary>
    public SecureAggregationException(string message)
        : base(message)
    {
    }
}

/// <summary>A message arrived in the wrong stage, or an operation was called out of order.</summary>
public sealed class ProtocolStageException(string message) : SecureAggregationException(message);

/// <summary>A message names a sender, receiver or peer that is not part of this round or not a neighbour.</summary>
public sealed class UnknownParticipantException(string message) : SecureAggregationException(message);

/// <summary>A participant sent a second message for the same stage.</summary>
public sealed class DuplicateMessageException(string message) : SecureAggregationException(message);

/// <summary>A message has a wrong length, a missing or extra entry, or a value out of range.</summary>
public sealed class MalformedMessageException(string message) : SecureAggregationException(message);

/// <summary>A share ciphertext failed AES-GCM authentication or a revealed share does not match its commitment.</summary>
public sealed class ShareAuthenticationException(string message) : SecureAggregationException(message);

/// <summary>Fewer than the threshold of participants remain; the round fails and releases nothing.</summary>
public sealed class InsufficientSurvivorsException(string message) : SecureAggregationException(message);
