using System.Security.Cryptography;
using Federated.Coordinator.State;
using Federated.Coordinator.Storage;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// Content-addressed global adapters, each CMS-signed by the coordinator's adapter signer: bytes are stored durably
/// (<see cref="IAdapterContent"/>: a file flushed and renamed into place beside a SQLite state, a committed row of a
/// PostgreSQL one) before the database records them, so a half-written adapter is never served; a round's adapter is served only once the transaction that completed its
/// round has committed (<see cref="AdapterRecordStore.Get"/>). With an at-rest cipher the stored bytes hold AES-GCM ciphertext (SHA256.adapter.enc) bound to the
/// adapter's hash; the hash that names the adapter in manifests and the audit chain is always the plaintext's.
/// </summary>
public sealed class AdapterStore
{
    private const string PlainExtension = ".adapter";
    private const string EncryptedExtension = ".adapter.enc";

    private readonly IAdapterContent _content;
    private readonly CoordinatorState _state;
    private readonly AdapterSigner _signer;
    private readonly AtRestCipher? _cipher;

    /// <summary>Adapters as files in <paramref name="directory"/>.</summary>
    internal AdapterStore(string directory, CoordinatorState state, AdapterSigner signer, AtRestCipher? cipher = null)
        : this(new AdapterFiles(directory), state, signer, cipher)
    {
    }

    internal AdapterStore(IAdapterContent content, CoordinatorState state, AdapterSigner signer, AtRestCipher? cipher = null)
    {
        ArgumentNullException.ThrowIfNull(content);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(signer);
        _content = content;
        _state = state;
        _signer = signer;
        _cipher = cipher;
    }

    /// <summary>
    /// The adapter store of <paramref name="state"/>'s backend: files in the adapters folder beside a SQLite file, rows
    /// of the database on PostgreSQL.
    /// </summary>
    internal static AdapterStore For(CoordinatorState state, AdapterSigner signer, AtRestCipher? cipher = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        IAdapterContent content = state.Location.Backend == StateBackend.Postgres
            ? new AdapterRows(state.Database)
            : new AdapterFiles(state.Location.AdapterDirectory!);
        return new AdapterStore(content, state, signer, cipher);
    }

    /// <summary>Whether new adapters are written encrypted.</summary>
    internal bool EncryptsAtRest => _cipher is not null;

    /// <summary>
    /// Writes an adapter's bytes durably and signs them, without recording it: the caller records the returned adapter
    /// in the unit of work it belongs to (a run's start, a round's completion), or <see cref="Discard"/>s it if that fails.
    /// </summary>
    internal StoredAdapter Write(ReadOnlySpan<byte> adapter)
    {
        if (adapter.IsEmpty)
        {
            throw new ArgumentException("an adapter cannot be empty", nameof(adapter));
        }
        string sha256 = Convert.ToHexStringLower(SHA256.HashData(adapter));
        if (_cipher is null)
        {
            string name = NameOf(sha256, encrypted: false);
            if (!_content.Exists(name))
            {
                _content.Write(name, adapter);
            }
        }
        else
        {
            string name = NameOf(sha256, encrypted: true);
            if (!_content.Exists(name))
            {
                _content.Write(name, _cipher.Encrypt(adapter, BlobName(sha256)));
            }
        }
        return new StoredAdapter(sha256, adapter.Length, _signer.Sign(adapter));
    }

    /// <summary>Stores and records an adapter on its own (one that belongs to no larger unit of work); returns its lowercase hex SHA-256.</summary>
    internal string Put(ReadOnlySpan<byte> adapter, string runId, int round)
    {
        StoredAdapter stored = Write(adapter);
        _state.AdapterRecords.Record(stored, runId, round, "coordinator");
        return stored.Sha256;
    }

    /// <summary>Deletes the bytes of an adapter whose recording failed, unless some row records the same bytes.</summary>
    internal void Discard(StoredAdapter adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        if (!_state.AdapterRecords.IsRecorded(adapter.Sha256))
        {
            Delete(adapter.Sha256);
        }
    }

    /// <summary>Opens a stored adapter's plaintext for reading with its size and CMS signature; null when unknown.</summary>
    /// <exception cref="AtRestDecryptionException">Encrypted under another key, tampered, or encrypted while no key is configured.</exception>
    internal (Stream Content, long SizeBytes, byte[] Signature)? Open(string sha256)
    {
        RequireHash(sha256);
        if (_state.AdapterRecords.Get(sha256) is not { } record)
        {
            return null;
        }
        using (Stream? encrypted = _content.OpenRead(NameOf(sha256, encrypted: true)))
        {
            if (encrypted is not null)
            {
                return (new MemoryStream(Decrypt(encrypted, sha256), writable: false), record.SizeBytes, record.Signature);
            }
        }
        // A plaintext blob is one written before encryption was turned on (or with it off).
        return _content.OpenRead(NameOf(sha256, encrypted: false)) is { } plain ? (plain, record.SizeBytes, record.Signature) : null;
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

    /// <summary>Removes an adapter's bytes (either form); the caller removes its database row.</summary>
    internal void Delete(string sha256)
    {
        RequireHash(sha256);
        _content.Delete(NameOf(sha256, encrypted: true));
        _content.Delete(NameOf(sha256, encrypted: false));
    }

    /// <summary>
    /// Checks at start-up that every encrypted adapter on disk was written under the configured key, so a wrong or
    /// missing key stops the coordinator with one clear error instead of failing the first download of a round.
    /// </summary>
    internal void CheckKey()
    {
        IReadOnlyList<string> encrypted = _content.Names(EncryptedExtension);
        if (encrypted.Count == 0)
        {
            return;
        }
        if (_cipher is null)
        {
            throw new AtRestDecryptionException(
                $"{encrypted.Count} stored adapters in {_content.Where} are encrypted at rest, but no key is configured: pass --at-rest-key FILE (or set Coordinator:AtRestKey)");
        }
        foreach (string name in encrypted)
        {
            byte[]? header = _content.ReadPrefix(name, AtRestCipher.HeaderBytes);
            if (header is null || header.Length != AtRestCipher.HeaderBytes)
            {
                throw new AtRestDecryptionException($"{name} in {_content.Where}: truncated encrypted adapter");
            }
            string keyId = AtRestCipher.ReadKeyId(header, name);
            if (keyId != _cipher.KeyId)
            {
                throw new AtRestDecryptionException(
                    $"{name} in {_content.Where} is encrypted under key id {keyId}, but the configured at-rest key has id {_cipher.KeyId}: wrong key file");
            }
        }
    }

    private byte[] Decrypt(Stream encrypted, string sha256)
    {
        if (_cipher is null)
        {
            throw new AtRestDecryptionException($"adapter {sha256} is encrypted at rest and no key is configured (--at-rest-key FILE)");
        }
        using var buffer = new MemoryStream();
        encrypted.CopyTo(buffer);
        return _cipher.Decrypt(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), BlobName(sha256));
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

    private static string NameOf(string sha256, bool encrypted) => sha256 + (encrypted ? EncryptedExtension : PlainExtension);

    /// <summary>The stored adapter's bytes, checked against their hash (a damaged file must not become the global model).</summary>
    public byte[] ReadVerified(string sha256)
    {
        byte[] content = Read(sha256)
            ?? throw new InvalidDataException($"the run's adapter {sha256} is not stored (or not released) on this coordinator");
        if (!Convert.ToHexStringLower(SHA256.HashData(content)).Equals(sha256, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"the stored adapter {sha256} does not match its hash");
        }
        return content;
    }
}
