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

    /// <summary>Imports a private scalar (the public point is computed by the platform).</summary>
    public static ECDiffieHellman FromPrivateScalar(ReadOnlySpan<byte> d)
    {
        var parameters = new ECParameters { Curve = ECCurve.NamedCurves.nistP256, D = d.ToArray() };
        try
        {
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

    /// <summary>Imports and validates (on-curve, correct order) a peer's public key; null when it is not a valid P-256 point.</summary>
    public static ECDiffieHellmanPublicKey? TryImportPublicKey(byte[] encoded, out ECDiffieHellman? holder)
    {
        holder = null;
        if (encoded is null || encoded.Length != PublicKeyBytes || encoded[0] != 0x04)
        {
            return null;
        }
        var parameters = new ECParameters
        {
            Curve = ECCurve.NamedCurves.nistP256,
            Q = new ECPoint { X = encoded.AsSpan(1, 32).ToArray(), Y = encoded.AsSpan(33, 32).ToArray() },
        };
        try
        {
            holder = ECDiffieHellman.Create(parameters);
            return holder.PublicKey;
        }
        catch (CryptographicException)
        {
            holder?.Dispose();
            holder = null;
            return null;
        }
    }

    /// <summary>HKDF-SHA256 of the ECDH shared secret, bound to the run, round and unordered pair, under a label.</summary>
    public static byte[] DeriveSharedKey(ECDiffieHellman own, ECDiffieHellmanPublicKey peer, bool maskSeed, string runId, long round, int a, int b)
    {
        byte[] secret = own.DeriveRawSecretAgreement(peer);
        try
        {
            byte[] info = PairContext(maskSeed ? s_maskSeedLabel : s_shareKeyLabel, runId, round, Math.Min(a, b), Math.Max(a, b));
            return HKDF.DeriveKey(HashAlgorithmName.SHA256, secret, 32, salt: null, info: info);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
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
