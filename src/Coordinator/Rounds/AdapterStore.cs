using System.Security.Cryptography;
using Federated.Coordinator.State;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// Content-addressed, signed global adapters: bytes are written to a temporary file, flushed and renamed into
/// place (the directory flushed too) before the database records them, so a half-written adapter is never served;
/// a round's adapter is served only once the transaction that completed its round has committed
/// (<see cref="CoordinatorState.GetAdapter"/>).
/// </summary>
internal sealed class AdapterStore
{
    private readonly string _directory;
    private readonly CoordinatorState _state;
    private readonly CoordinatorSigner _signer;

    public AdapterStore(string directory, CoordinatorState state, CoordinatorSigner signer)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(signer);
        _directory = directory;
        _state = state;
        _signer = signer;
        Directory.CreateDirectory(directory);
    }

    /// <summary>Stores an adapter and returns its lowercase hex SHA-256.</summary>
    public string Put(ReadOnlySpan<byte> adapter, string runId, int round)
    {
        if (adapter.IsEmpty)
        {
            throw new ArgumentException("an adapter cannot be empty", nameof(adapter));
        }
        byte[] digest = SHA256.HashData(adapter);
        string sha256 = Convert.ToHexStringLower(digest);
        string path = PathOf(sha256);
        if (!File.Exists(path))
        {
            string temporary = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(adapter);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, path, overwrite: true);
            Storage.DurableDirectory.Flush(_directory);
        }
        _state.RecordAdapter(sha256, runId, round, adapter.Length, _signer.SignHash(digest), "coordinator");
        return sha256;
    }

    /// <summary>Opens a stored adapter for reading with its size and signature; null when unknown.</summary>
    public (FileStream Content, long SizeBytes, byte[] Signature)? Open(string sha256)
    {
        if (sha256.Length != 64 || !sha256.All(char.IsAsciiHexDigitLower))
        {
            throw new ArgumentException($"'{sha256}' is not a lowercase hex SHA-256", nameof(sha256));
        }
        if (_state.GetAdapter(sha256) is not { } record || !File.Exists(PathOf(sha256)))
        {
            return null;
        }
        return (new FileStream(PathOf(sha256), FileMode.Open, FileAccess.Read, FileShare.Read), record.SizeBytes, record.Signature);
    }

    private string PathOf(string sha256) => Path.Combine(_directory, sha256 + ".adapter");
}
