using System.Security.Cryptography;
using System.Text;

namespace Federated.Coordinator.Storage;

/// <summary>A stored blob could not be decrypted: wrong key, tampered bytes, or stored under another name.</summary>
internal sealed class AtRestDecryptionException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Encrypts the coordinator's stored adapters and checkpoints with AES-256-GCM under a key file, so a copied disk
/// or backup reveals nothing without the key.
/// </summary>
/// <remarks>
/// Format: "FEDAR1" magic (6 bytes), key id (8 bytes: first bytes of SHA-256 of the key, to name a wrong key),
/// 12-byte random nonce, ciphertext, 16-byte tag. The associated data is the blob's logical name (for example
/// "run/7/round/3/adapter"), so a blob moved or swapped under another name fails authentication. A random 96-bit
/// nonce per blob stays far below GCM's 2^32-invocations bound for one key (NIST SP 800-38D, section 8.3).
/// </remarks>
internal sealed class AtRestCipher : IDisposable
{
    public const int KeyBytes = 32;

    /// <summary>The key file `pki init` writes into the PKI folder.</summary>
    public const string DefaultFileName = "at-rest.key";

    private static ReadOnlySpan<byte> Magic => "FEDAR1"u8;
    private const int KeyIdBytes = 8;
    private const int NonceBytes = 12;
    private const int TagBytes = 16;

    /// <summary>Bytes before the ciphertext: magic, key id and nonce.</summary>
    public const int HeaderBytes = 6 + KeyIdBytes + NonceBytes;

    private readonly AesGcm _aes;

    // One AesGcm holds one native cipher context (OpenSSL EVP_CIPHER_CTX): concurrent calls corrupt it, so downloads
    // running in parallel take turns. Encrypting or decrypting an adapter takes milliseconds.
    private readonly Lock _gate = new();
    private readonly byte[] _keyId;

    public AtRestCipher(ReadOnlySpan<byte> key)
    {
        if (key.Length != KeyBytes)
        {
            throw new ArgumentException($"at-rest key must be {KeyBytes} bytes, got {key.Length}", nameof(key));
        }
        _aes = new AesGcm(key, TagBytes);
        _keyId = SHA256.HashData(key)[..KeyIdBytes];
    }

    /// <summary>The key's id (hex of the first 8 bytes of its SHA-256), which every blob carries to name a wrong key.</summary>
    public string KeyId => Convert.ToHexStringLower(_keyId);

    /// <summary>The key id a blob (or at least its first <see cref="HeaderBytes"/> bytes) was encrypted under.</summary>
    public static string ReadKeyId(ReadOnlySpan<byte> blob, string name)
    {
        if (blob.Length < HeaderBytes || !blob[..6].SequenceEqual(Magic))
        {
            throw new AtRestDecryptionException($"{name}: not an encrypted blob (bad header)");
        }
        return Convert.ToHexStringLower(blob.Slice(6, KeyIdBytes));
    }

    /// <summary>Writes a new random key file readable by its owner only.</summary>
    public static void CreateKeyFile(string path)
    {
        byte[] key = RandomNumberGenerator.GetBytes(KeyBytes);
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }
            using var stream = new FileStream(path, options);
            stream.Write(Encoding.ASCII.GetBytes(Convert.ToBase64String(key) + "\n"));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    /// <summary>Loads a key file (base64 of 32 bytes); refuses one that others can read.</summary>
    public static AtRestCipher FromKeyFile(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"at-rest key file not found: {path}", path);
        }
        if (!OperatingSystem.IsWindows()
            && (File.GetUnixFileMode(path) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            throw new UnauthorizedAccessException($"at-rest key file {path} is readable by group or others; chmod 600 it");
        }
        byte[] key = [];
        try
        {
            key = Convert.FromBase64String(File.ReadAllText(path).Trim());
            return new AtRestCipher(key);
        }
        catch (FormatException)
        {
            throw new InvalidDataException($"at-rest key file {path} is not base64 of {KeyBytes} bytes");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    public byte[] Encrypt(ReadOnlySpan<byte> plaintext, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        byte[] blob = new byte[HeaderBytes + plaintext.Length + TagBytes];
        Magic.CopyTo(blob);
        _keyId.CopyTo(blob.AsSpan(6));
        Span<byte> nonce = blob.AsSpan(6 + KeyIdBytes, NonceBytes);
        RandomNumberGenerator.Fill(nonce);
        lock (_gate)
        {
            _aes.Encrypt(nonce, plaintext, blob.AsSpan(HeaderBytes, plaintext.Length), blob.AsSpan(HeaderBytes + plaintext.Length), Encoding.UTF8.GetBytes(name));
        }
        return blob;
    }

    public byte[] Decrypt(ReadOnlySpan<byte> blob, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (blob.Length < HeaderBytes + TagBytes || !blob[..6].SequenceEqual(Magic))
        {
            throw new AtRestDecryptionException($"{name}: not an encrypted blob (bad header)");
        }
        if (!CryptographicOperations.FixedTimeEquals(blob.Slice(6, KeyIdBytes), _keyId))
        {
            throw new AtRestDecryptionException($"{name}: encrypted under another key (key id {Convert.ToHexStringLower(blob.Slice(6, KeyIdBytes))})");
        }
        int length = blob.Length - HeaderBytes - TagBytes;
        byte[] plaintext = new byte[length];
        try
        {
            lock (_gate)
            {
                _aes.Decrypt(blob.Slice(6 + KeyIdBytes, NonceBytes), blob.Slice(HeaderBytes, length), blob[^TagBytes..], plaintext, Encoding.UTF8.GetBytes(name));
            }
        }
        catch (AuthenticationTagMismatchException ex)
        {
            CryptographicOperations.ZeroMemory(plaintext);
            throw new AtRestDecryptionException($"{name}: authentication failed (tampered, truncated, or stored under another name)", ex);
        }
        return plaintext;
    }

    /// <summary>Encrypts to <paramref name="path"/> atomically (temp file, then rename), so no half-written blob is ever read.</summary>
    public void WriteFile(string path, ReadOnlySpan<byte> plaintext, string name)
    {
        byte[] blob = Encrypt(plaintext, name);
        string temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            stream.Write(blob);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }

    public byte[] ReadFile(string path, string name) => Decrypt(File.ReadAllBytes(path), name);

    public void Dispose() => _aes.Dispose();
}
