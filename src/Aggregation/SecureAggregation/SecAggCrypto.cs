using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Federated.Aggregation.SecureAggregation;

/// <summary>
/// The protocol's key derivations and share encryption: ECDH P-256 agreements, HKDF-SHA256 (RFC 5869) with
/// labels that separate the pairwise mask seed from the share-encryption key, AES-256-GCM with associated data
/// binding run, round, sender and receiver, and salted SHA-256 commitments to individual Shamir shares.
/// </summary>
internal static class SecAggCrypto
{
    public const int PublicKeyBytes = 65;          // SEC1 uncompressed point 0x04 || X || Y
    public const int PrivateKeyBytes = 32;
    public const int SaltBytes = 16;
    public const int CommitmentBytes = 32;
    public const int TagBytes = 16;
    public const int SharePlaintextBytes = 2 * ShamirSecretSharing.ShareBytes + 2 * SaltBytes;
    public const int ShareCiphertextBytes = SharePlaintextBytes + TagBytes;

    private static readonly byte[] s_maskSeedLabel = Encoding.ASCII.GetBytes("FedSecAgg/v1/pairwise-mask-seed");
    private static readonly byte[] s_shareKeyLabel = Encoding.ASCII.GetBytes("FedSecAgg/v1/share-encryption-key");
    private static readonly byte[] s_shareAdLabel = Encoding.ASCII.GetBytes("FedSecAgg/v1/share");
    private static readonly byte[] s_commitLabel = Encoding.ASCII.GetBytes("FedSecAgg/v1/share-commitment");

    // Order n of the P-256 base point (FIPS 186-4 D.1.2.3).
    private static readonly byte[] s_p256Order = Convert.FromHexString("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551");

    public enum ShareKind : byte
    {
        SelfMaskSeed = 1,
        MaskKey = 2,
    }

    /// <summary>A P-256 key pair whose private scalar comes from the injected random source (rejection sampled in [1, n)).</summary>
    public static ECDiffieHellman GenerateKeyPair(SecureRandomFill random, out byte[] privateScalar)
    {
        byte[] d = new byte[PrivateKeyBytes];
        while (true)
        {
            random(d);
            if (d.AsSpan().IndexOfAnyExcept((byte)0) >= 0 && d.AsSpan().SequenceCompareTo(s_p256Order) < 0)
            {
                break;
            }
        }
        privateScalar = d;
        return FromPrivateScalar(d);
    }

    /// <summary>
    /// Imports a private scalar (the public point is computed by the platform). Where <see cref="OpenSslP256"/> is
    /// available the key is an <see cref="ECDiffieHellmanOpenSsl"/>, whose EVP_PKEY the fast derive uses.
    /// </summary>
    public static ECDiffieHellman FromPrivateScalar(ReadOnlySpan<byte> d)
    {
        var parameters = new ECParameters { Curve = ECCurve.NamedCurves.nistP256, D = d.ToArray() };
        try
        {
            if (OpenSslP256.IsAvailable)
            {
                var key = new ECDiffieHellmanOpenSsl();
                try
                {
                    key.ImportParameters(parameters);
                    return key;
                }
                catch
                {
                    key.Dispose();
                    throw;
                }
            }
            return ECDiffieHellman.Create(parameters);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(parameters.D);
        }
    }

    public static byte[] ExportPublicKey(ECDiffieHellman key)
    {
        ECParameters p = key.ExportParameters(false);
        byte[] result = new byte[PublicKeyBytes];
        result[0] = 0x04;
        p.Q.X!.CopyTo(result, 1);
        p.Q.Y!.CopyTo(result, 33);
        return result;
    }

    /// <summary>
    /// Imports and validates a peer's public key (coordinates in range, on the curve; with cofactor 1 that is also
    /// the right order); null when it is not a valid uncompressed P-256 point. Import each advertised key once and
    /// reuse it for every agreement with that peer.
    /// </summary>
    public static PeerPublicKey? TryImportPublicKey(byte[]? encoded)
    {
        if (encoded is null || encoded.Length != PublicKeyBytes || encoded[0] != 0x04)
        {
            return null;
        }
        if (OpenSslP256.IsAvailable)
        {
            SafeEvpPKeyHandle? native = OpenSslP256.TryImportPublicKey(encoded);
            return native is null ? null : new PeerPublicKey(native);
        }
        var parameters = new ECParameters
        {
            Curve = ECCurve.NamedCurves.nistP256,
            Q = new ECPoint { X = encoded.AsSpan(1, 32).ToArray(), Y = encoded.AsSpan(33, 32).ToArray() },
        };
        ECDiffieHellman? holder = null;
        try
        {
            holder = ECDiffieHellman.Create(parameters);
            return new PeerPublicKey(holder, holder.PublicKey);
        }
        catch (CryptographicException)
        {
            holder?.Dispose();
            return null;
        }
    }

    /// <summary>HKDF-SHA256 of the ECDH shared secret, bound to the run, round and unordered pair, under a label.</summary>
    public static byte[] DeriveSharedKey(ECDiffieHellman own, PeerPublicKey peer, bool maskSeed, string runId, long round, int a, int b)
    {
        byte[] secret = new byte[PrivateKeyBytes];
        try
        {
            if (peer.Native is { } native && OpenSslP256.IsAvailable)
            {
                DeriveNative(own, native, secret);
            }
            else
            {
                CryptographicOperations.ZeroMemory(secret);
                secret = own.DeriveRawSecretAgreement(peer.Managed!);
            }
            byte[] info = PairContext(maskSeed ? s_maskSeedLabel : s_shareKeyLabel, runId, round, Math.Min(a, b), Math.Max(a, b));
            return HKDF.DeriveKey(HashAlgorithmName.SHA256, secret, 32, salt: null, info: info);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    private static void DeriveNative(ECDiffieHellman own, SafeEvpPKeyHandle peer, Span<byte> secret)
    {
        if (own is ECDiffieHellmanOpenSsl openSsl)
        {
            using SafeEvpPKeyHandle ownHandle = openSsl.DuplicateKeyHandle();
            OpenSslP256.DeriveRawSecret(ownHandle, peer, secret);
            return;
        }
        // An own key made elsewhere (not by FromPrivateScalar): copy it into an OpenSSL key. Slow, but correct.
        ECParameters parameters = own.ExportParameters(includePrivateParameters: true);
        try
        {
            using var copy = new ECDiffieHellmanOpenSsl();
            copy.ImportParameters(parameters);
            using SafeEvpPKeyHandle ownHandle = copy.DuplicateKeyHandle();
            OpenSslP256.DeriveRawSecret(ownHandle, peer, secret);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(parameters.D);
        }
    }

    public static byte[] EncryptShares(byte[] key, string runId, long round, int sender, int receiver, ReadOnlySpan<byte> plaintext)
    {
        byte[] ciphertext = new byte[ShareCiphertextBytes];
        Span<byte> nonce = stackalloc byte[12];
        ShareNonce(sender, receiver, nonce);
        using var gcm = new AesGcm(key, TagBytes);
        gcm.Encrypt(nonce, plaintext, ciphertext.AsSpan(0, SharePlaintextBytes), ciphertext.AsSpan(SharePlaintextBytes), ShareAssociatedData(runId, round, sender, receiver));
        return ciphertext;
    }

    /// <summary>Decrypts and authenticates; false (plaintext zeroed) when the tag does not verify.</summary>
    public static bool TryDecryptShares(byte[] key, string runId, long round, int sender, int receiver, ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        if (ciphertext.Length != ShareCiphertextBytes || plaintext.Length != SharePlaintextBytes)
        {
            return false;
        }
        Span<byte> nonce = stackalloc byte[12];
        ShareNonce(sender, receiver, nonce);
        using var gcm = new AesGcm(key, TagBytes);
        try
        {
            gcm.Decrypt(nonce, ciphertext[..SharePlaintextBytes], ciphertext[SharePlaintextBytes..], plaintext, ShareAssociatedData(runId, round, sender, receiver));
            return true;
        }
        catch (AuthenticationTagMismatchException)
        {
            CryptographicOperations.ZeroMemory(plaintext);
            return false;
        }
    }

    /// <summary>Salted SHA-256 commitment to one share: hiding (random 128-bit salt) and binding (collision resistance).</summary>
    public static byte[] Commit(string runId, long round, int dealer, int holder, ShareKind kind, ReadOnlySpan<byte> salt, ReadOnlySpan<byte> share)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(PairContext(s_commitLabel, runId, round, dealer, holder));
        hash.AppendData([(byte)kind]);
        hash.AppendData(salt);
        hash.AppendData(share);
        return hash.GetHashAndReset();
    }

    private static void ShareNonce(int sender, int receiver, Span<byte> nonce)
    {
        // Each key is fresh per round and pair, and each direction is used once, so (sender, receiver) is unique.
        nonce.Clear();
        BinaryPrimitives.WriteInt32BigEndian(nonce, sender);
        BinaryPrimitives.WriteInt32BigEndian(nonce[4..], receiver);
    }

    private static byte[] ShareAssociatedData(string runId, long round, int sender, int receiver) =>
        PairContext(s_shareAdLabel, runId, round, sender, receiver);

    private static byte[] PairContext(byte[] label, string runId, long round, int first, int second)
    {
        byte[] run = Encoding.UTF8.GetBytes(runId);
        byte[] result = new byte[label.Length + 4 + run.Length + 8 + 4 + 4];
        var span = result.AsSpan();
        label.CopyTo(span);
        span = span[label.Length..];
        BinaryPrimitives.WriteInt32BigEndian(span, run.Length);
        run.CopyTo(span[4..]);
        span = span[(4 + run.Length)..];
        BinaryPrimitives.WriteInt64BigEndian(span, round);
        BinaryPrimitives.WriteInt32BigEndian(span[8..], first);
        BinaryPrimitives.WriteInt32BigEndian(span[12..], second);
        return result;
    }
}

/// <summary>
/// A validated peer P-256 public key: an OpenSSL EVP_PKEY on the fast path, otherwise the BCL's key object.
/// </summary>
internal sealed class PeerPublicKey : IDisposable
{
    private readonly ECDiffieHellman? _holder;
    private readonly ECDiffieHellmanPublicKey? _managed;

    internal PeerPublicKey(SafeEvpPKeyHandle native) => Native = native;

    internal PeerPublicKey(ECDiffieHellman holder, ECDiffieHellmanPublicKey managed)
    {
        _holder = holder;
        _managed = managed;
    }

    /// <summary>The OpenSSL key; null on the BCL path.</summary>
    internal SafeEvpPKeyHandle? Native { get; }

    /// <summary>The BCL's public key; null on the OpenSSL path.</summary>
    internal ECDiffieHellmanPublicKey? Managed => _managed;

    public void Dispose()
    {
        Native?.Dispose();
        _managed?.Dispose();
        _holder?.Dispose();
    }
}
