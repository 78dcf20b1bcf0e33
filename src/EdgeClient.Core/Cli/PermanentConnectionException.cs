namespace Federated.EdgeClient.Cli;

/// <summary>A connection failure retrying cannot fix (a refused certificate or identity): `run` stops with exit 1 and one line.</summary>
internal sealed class PermanentConnectionException(string message, Exception inner) : Exception(message, inner);
