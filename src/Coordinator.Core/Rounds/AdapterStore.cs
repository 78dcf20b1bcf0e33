using System.Security.Cryptography;
using Federated.Coordinator.State;
using Federated.Coordinator.Storage;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// Content-addressed global adapters, each CMS-signed by the coordinator's adapter signer: bytes are written to a
/// temporary file, flushed and renamed into place (the directory flushed too) before the database records them, so a
/// half-written adapter is never served; a round's adapter is served only once the transaction that completed its
/// round has committed (<see cref="CoordinatorState.GetAdapter"/>). With an at-rest cipher the files hold AES-GCM ciphertext (SHA256.adapter.enc) bound to the
/// adapter's hash; the hash that names the adapter in manifests and the audit chain is always the plaintext's.
/// </summary>
internal sealed class AdapterStore
{
    private const string PlainExtension = ".adapter";
    private const string EncryptedExtension = ".adapter.enc";

    private readonly string _directory;
    private readonly CoordinatorState _state;
    private readonly AdapterSigner _signer;
    private readonly AtRestCipher? _cipher;

    public AdapterStore(string directory, CoordinatorState state, AdapterSigner signer, AtRestCipher? cipher = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(signer);
        _directory = directory;
        _state = state;
        _signer = signer;
        _cipher = cipher;
        Directory.CreateDirectory(directory);
    }

    /// <summary>Whether new adapters are written encrypted.</summary>
    public bool EncryptsAtRest => _cipher is not null;

    /// <summary>Stores an adapter and returns its lowercase hex SHA-256.</summary>
    public string Put(ReadOnlySpan<byte> adapter, string runId, int round)
    {
        if (adapter.IsEmpty)
        {
            throw new ArgumentException("an adapter cannot be empty", nameof(adapter));
        }
        string sha256 = Convert.ToHexStringLower(SHA256.HashData(adapter));
        if (_cipher is null)
        {
            string path = PathOf(sha256, encrypted: false);
            if (!File.Exists(path))
            {
                WriteAtomically(path, adapter);
            }
        }
        else
        {
            string path = PathOf(sha256, encrypted: true);
            if (!File.Exists(path))
            {
                WriteAtomically(path, _cipher.Encrypt(adapter, BlobName(sha256)));
            }
        }
        _state.RecordAdapter(sha256, runId, round, adapter.Length, _signer.Sign(adapter), "coordinator");
        return sha256;
    }

    /// <summary>Opens a stored adapter's plaintext for reading with its size and CMS signature; null when unknown.</summary>
    /// <exception cref="AtRestDecryptionException">Encrypted under another key, tampered, or encrypted while no key is configured.</exception>
    public (Stream Content, long SizeBytes, byte[] Signature)? Open(string sha256)
    {
        RequireHash(sha256);
        if (_state.GetAdapter(sha256) is not { } record)
        {
            return null;
        }
        string encrypted = PathOf(sha256, encrypted: true);
        if (File.Exists(encrypted))
        {
            return (new MemoryStream(Decrypt(encrypted, sha256), writable: false), record.SizeBytes, record.Signature);
        }
        // A plaintext file is one written before encryption was turned on (or with it off).
        string plain = PathOf(sha256, encrypted: false);
        return File.Exists(plain)
            ? (new FileStream(plain, FileMode.Open, FileAccess.Read, FileShare.Read), record.SizeBytes, record.Signature)
            : null;
    }

    /// <summary>A stored adapter's plaintext bytes; null when unknown.</summary>
    public byte[]? Read(string sha256)
    {
        if (Open(sha256) is not { } opened)
        {
            return null;
        }
        using Stream content = opened.Content;
        using var buffer = new MemoryStream();
        content.CopyTo(buffer);
        return buffer.ToArray();
    }

    /// <summary>Removes an adapter's file (either form); the caller removes its database row.</summary>
    public void Delete(string sha256)
    {
        RequireHash(sha256);
        File.Delete(PathOf(sha256, encrypted: true));
        File.Delete(PathOf(sha256, encrypted: false));
    }

    /// <summary>
    /// Checks at start-up that every encrypted adapter on disk was written under the configured key, so a wrong or
    /// missing key stops the coordinator with one clear error instead of failing the first download of a round.
    /// </summary>
    public void CheckKey()
    {
        string[] encrypted = Directory.GetFiles(_directory, "*" + EncryptedExtension);
        if (encrypted.Length == 0)
        {
            return;
        }
        if (_cipher is null)
        {
            throw new AtRestDecryptionException(
                $"{encrypted.Length} stored adapters in '{_directory}' are encrypted at rest, but no key is configured: pass --at-rest-key FILE (or set Coordinator:AtRestKey)");
        }
        byte[] header = new byte[AtRestCipher.HeaderBytes];
        foreach (string path in encrypted)
        {
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
            {
                if (stream.ReadAtLeast(header, header.Length, throwOnEndOfStream: false) != header.Length)
                {
                    throw new AtRestDecryptionException($"{path}: truncated encrypted adapter");
                }
            }
            string keyId = AtRestCipher.ReadKeyId(header, path);
            if (keyId != _cipher.KeyId)
            {
                throw new AtRestDecryptionException(
                    $"{path} is encrypted under key id {keyId}, but the configured at-rest key has id {_cipher.KeyId}: wrong key file");
            }
        }
    }

    private byte[] Decrypt(string path, string sha256)
    {
        if (_cipher is null)
        {
            throw new AtRestDecryptionException($"adapter {sha256} is encrypted at rest and no key is configured (--at-rest-key FILE)");
        }
        return _cipher.ReadFile(path, BlobName(sha256));
    }

    private void WriteAtomically(string path, ReadOnlySpan<byte> bytes)
    {
        string temporary = path + "." + Guid.NewGuid().ToString("N") + ".tmp";
        using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
        {
            stream.Write(bytes);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        DurableDirectory.Flush(_directory);
    }

    private static void RequireHash(string sha256)
    {
        ArgumentNullException.ThrowIfNull(sha256);
        if (sha256.Length != 64 || !sha256.All(char.IsAsciiHexDigitLower))
        {
            throw new ArgumentException($"'{sha256}' is not a lowercase hex SHA-256", nameof(sha256));
        }
    }

    // The associated data binds a ciphertext to the adapter it claims to be: a blob swapped under another hash fails.
    private static string BlobName(string sha256) => "adapter/" + sha256;

    private string PathOf(string sha256, bool encrypted) => Path.Combine(_directory, sha256 + (encrypted ? EncryptedExtension : PlainExtension));
}
