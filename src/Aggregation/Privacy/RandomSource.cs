using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Federated.Aggregation.Privacy;

/// <summary>A source of uniformly random bytes; privacy noise draws only from this.</summary>
public interface IRandomSource
{
    /// <summary>Fills the destination with uniformly random bytes.</summary>
    void Fill(Span<byte> destination);
}

/// <summary>The operating system's cryptographic generator (RandomNumberGenerator); the default everywhere.</summary>
public sealed class CryptoRandomSource : IRandomSource
{
    /// <summary>The shared instance (RandomNumberGenerator.Fill is thread-safe).</summary>
    public static CryptoRandomSource Instance { get; } = new();

    /// <inheritdoc/>
    public void Fill(Span<byte> destination) => RandomNumberGenerator.Fill(destination);
}

/// <summary>
/// A deterministic AES-256-CTR keystream keyed by SHA-256(label || 0x00 || seed), for randomness that several
/// parties must reproduce (the rotation signs from the round manifest) or for reproducible tests. Not thread-safe.
/// </summary>
public sealed class AesCtrRandomSource : IRandomSource, IDisposable
{
    private const int BlocksPerBatch = 256;
    private readonly Aes _aes;
    private readonly byte[] _counterBlocks = new byte[16 * BlocksPerBatch];
    private readonly byte[] _keystream = new byte[16 * BlocksPerBatch];
    private int _available;
    private ulong _counter;

    /// <summary>Creates the stream for a domain label and a seed (any length, at least 16 bytes).</summary>
    public AesCtrRandomSource(string label, ReadOnlySpan<byte> seed)
    {
        ArgumentException.ThrowIfNullOrEmpty(label);
        if (seed.Length < 16)
        {
            throw new ArgumentOutOfRangeException(nameof(seed), seed.Length, "seed must be at least 16 bytes");
        }
        byte[] labelBytes = Encoding.UTF8.GetBytes(label);
        byte[] material = new byte[labelBytes.Length + 1 + seed.Length];
        byte[] key = new byte[32];
        try
        {
            labelBytes.CopyTo(material, 0);
            seed.CopyTo(material.AsSpan(labelBytes.Length + 1));
            SHA256.HashData(material, key);
            _aes = Aes.Create();
            _aes.Key = key;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(material);
            CryptographicOperations.ZeroMemory(key);
        }
    }

    /// <inheritdoc/>
    public void Fill(Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            if (_available == 0)
            {
                Refill();
            }
            int take = Math.Min(_available, destination.Length);
            _keystream.AsSpan(_keystream.Length - _available, take).CopyTo(destination);
            _available -= take;
            destination = destination[take..];
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_keystream);
        _aes.Dispose();
    }

    private void Refill()
    {
        // CTR mode: encrypt consecutive 128-bit big-endian counters (high half zero) in one ECB call.
        for (int i = 0; i < BlocksPerBatch; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(_counterBlocks.AsSpan(16 * i + 8, 8), _counter++);
        }
        _aes.EncryptEcb(_counterBlocks, _keystream, PaddingMode.None);
        _available = _keystream.Length;
    }
}
