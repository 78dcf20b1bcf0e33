using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

public sealed class SecAggCryptoTests
{
    // NIST CAVS ECC CDH primitive test vector, P-256, COUNT = 0 (KAS ECC CDH, SP 800-56A).
    private static readonly byte[] s_cavsPeer = Convert.FromHexString(
        "04700c48f77f56584c5cc632ca65640db91b6bacce3a4df6b42ce7cc838833d287db71e509e3fd9b060ddb20ba5c51dcc5948d46fbf640dfe0441782cab85fa4ac");
    private static readonly byte[] s_cavsScalar = Convert.FromHexString("7d7dc5f71eb29ddaf80d6214632eeae03d9058af1fb6d22ed80badb62bc1a534");
    private static readonly byte[] s_cavsPublic = Convert.FromHexString(
        "04ead218590119e8876b29146ff89ca61770c4edbbf97d38ce385ed281d8a6b23028af61281fd35e2fa7002523acc85a429cb06ee6648325389f59edfce1405141");
    private static readonly byte[] s_cavsSecret = Convert.FromHexString("46fc62106420ff012e54a434fbdd2d25ccc5852060561e68040dd7778997bd7b");

    [Fact]
    public void OpenSslFastPath_IsTakenOnLinux()
    {
        // The BCL path is three times slower per agreement; losing the fast path silently would be a regression.
        Assert.Equal(OperatingSystem.IsLinux(), OpenSslP256.IsAvailable);
    }

    [Fact]
    public void DeriveSharedKey_CavsVector_IsHkdfOfTheKnownSecret()
    {
        using ECDiffieHellman own = SecAggCrypto.FromPrivateScalar(s_cavsScalar);
        Assert.Equal(s_cavsPublic, SecAggCrypto.ExportPublicKey(own));
        using PeerPublicKey peer = SecAggCrypto.TryImportPublicKey(s_cavsPeer)!;
        Assert.NotNull(peer);
        byte[] expected = HKDF.DeriveKey(HashAlgorithmName.SHA256, s_cavsSecret, 32, salt: null, info: Info("FedSecAgg/v1/pairwise-mask-seed", "run", 7, 3, 9));
        Assert.Equal(expected, SecAggCrypto.DeriveSharedKey(own, peer, maskSeed: true, "run", 7, 9, 3));
        byte[] shareKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, s_cavsSecret, 32, salt: null, info: Info("FedSecAgg/v1/share-encryption-key", "run", 7, 3, 9));
        Assert.Equal(shareKey, SecAggCrypto.DeriveSharedKey(own, peer, maskSeed: false, "run", 7, 3, 9));
    }

    [Fact]
    public void DeriveSharedKey_FastPath_MatchesBclPathAndIsSymmetric()
    {
        var random = new Random(11);
        SecureRandomFill fill = random.NextBytes;
        for (int trial = 0; trial < 8; trial++)
        {
            using ECDiffieHellman a = SecAggCrypto.GenerateKeyPair(fill, out byte[] aScalar);
            using ECDiffieHellman b = SecAggCrypto.GenerateKeyPair(fill, out _);
            using PeerPublicKey bPublic = SecAggCrypto.TryImportPublicKey(SecAggCrypto.ExportPublicKey(b))!;
            using PeerPublicKey aPublic = SecAggCrypto.TryImportPublicKey(SecAggCrypto.ExportPublicKey(a))!;
            byte[] fast = SecAggCrypto.DeriveSharedKey(a, bPublic, maskSeed: true, "r", 1, 1, 2);
            Assert.Equal(fast, SecAggCrypto.DeriveSharedKey(b, aPublic, maskSeed: true, "r", 1, 2, 1));

            // The BCL path: keys made by ECDiffieHellman.Create, the peer as the BCL's public key object.
            using ECDiffieHellman bclOwn = ECDiffieHellman.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, D = aScalar });
            ECParameters bq = b.ExportParameters(false);
            ECDiffieHellman bclHolder = ECDiffieHellman.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, Q = bq.Q });
            using var bclPeer = new PeerPublicKey(bclHolder, bclHolder.PublicKey);
            Assert.Equal(fast, SecAggCrypto.DeriveSharedKey(bclOwn, bclPeer, maskSeed: true, "r", 1, 1, 2));

            // An own key not made by SecAggCrypto with a fast-path peer still agrees.
            Assert.Equal(fast, SecAggCrypto.DeriveSharedKey(bclOwn, bPublic, maskSeed: true, "r", 1, 1, 2));
        }
    }

    public static TheoryData<string, string> RefusedKeys()
    {
        byte[] valid = s_cavsPeer;
        byte[] offCurve = (byte[])valid.Clone();
        offCurve[64] ^= 1; // y + 1 or y - 1: not on the curve for this x
        byte[] xOffCurve = (byte[])valid.Clone();
        xOffCurve[1] ^= 0x80;
        byte[] coordinatesAtLeastP = new byte[65];
        coordinatesAtLeastP[0] = 0x04;
        coordinatesAtLeastP.AsSpan(1).Fill(0xFF);
        byte[] prefixOnlyZeros = new byte[65];
        prefixOnlyZeros[0] = 0x04;
        byte[] compressed = new byte[33];
        compressed[0] = (byte)(0x02 | (valid[64] & 1));
        valid.AsSpan(1, 32).CopyTo(compressed.AsSpan(1));
        byte[] hybrid = (byte[])valid.Clone();
        hybrid[0] = (byte)(0x06 | (valid[64] & 1));
        byte[] compressedPrefixLong = (byte[])valid.Clone();
        compressedPrefixLong[0] = 0x02;
        return new TheoryData<string, string>
        {
            { "off curve (y)", Convert.ToHexString(offCurve) },
            { "off curve (x)", Convert.ToHexString(xOffCurve) },
            { "coordinates >= p", Convert.ToHexString(coordinatesAtLeastP) },
            { "all zero", Convert.ToHexString(new byte[65]) },
            { "0x04 then zeros", Convert.ToHexString(prefixOnlyZeros) },
            { "point at infinity", "00" },
            { "empty", "" },
            { "64 bytes", Convert.ToHexString(valid.AsSpan(0, 64)) },
            { "66 bytes", Convert.ToHexString([.. valid, 0]) },
            { "compressed (valid point)", Convert.ToHexString(compressed) },
            { "hybrid prefix", Convert.ToHexString(hybrid) },
            { "65 bytes with 0x02 prefix", Convert.ToHexString(compressedPrefixLong) },
        };
    }

    [Theory]
    [MemberData(nameof(RefusedKeys))]
    public void TryImportPublicKey_InvalidEncoding_IsRefused(string what, string hex)
    {
        Assert.True(Convert.FromHexString(hex) is var key && SecAggCrypto.TryImportPublicKey(key) is null, what);
    }

    [Fact]
    public void TryImportPublicKey_NullAndValid()
    {
        Assert.Null(SecAggCrypto.TryImportPublicKey(null));
        using PeerPublicKey? valid = SecAggCrypto.TryImportPublicKey(s_cavsPeer);
        Assert.NotNull(valid);
        Assert.Equal(OpenSslP256.IsAvailable, valid!.Native is not null);
    }

    private static byte[] Info(string label, string runId, long round, int first, int second)
    {
        byte[] run = Encoding.UTF8.GetBytes(runId);
        byte[] l = Encoding.ASCII.GetBytes(label);
        byte[] result = new byte[l.Length + 4 + run.Length + 16];
        l.CopyTo(result, 0);
        BinaryPrimitives.WriteInt32BigEndian(result.AsSpan(l.Length), run.Length);
        run.CopyTo(result, l.Length + 4);
        BinaryPrimitives.WriteInt64BigEndian(result.AsSpan(l.Length + 4 + run.Length), round);
        BinaryPrimitives.WriteInt32BigEndian(result.AsSpan(l.Length + 12 + run.Length), first);
        BinaryPrimitives.WriteInt32BigEndian(result.AsSpan(l.Length + 16 + run.Length), second);
        return result;
    }
}
