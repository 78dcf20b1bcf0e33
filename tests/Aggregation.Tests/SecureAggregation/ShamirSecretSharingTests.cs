using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

public sealed class ShamirSecretSharingTests
{
    [Fact]
    public void Field127_KnownValues_Hold()
    {
        UInt128 p = Field127.P;
        Assert.Equal(UInt128.One, Field127.Multiply(p - 1, p - 1)); // (-1)(-1) = 1
        Assert.Equal(p - 2, Field127.Multiply(p - 1, 2));
        Assert.Equal(UInt128.Zero, Field127.Add(p - 1, 1));
        Assert.Equal(p - 1, Field127.Subtract(0, 1));
        Assert.Equal((UInt128)1 << 126, Field127.Inverse(2)); // 2 * 2^126 = 2^127 = 1
        using var random = new DeterministicRandom(5);
        byte[] b = new byte[16];
        for (int i = 0; i < 200; i++)
        {
            random.Fill(b);
            UInt128 a = System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(b) % p;
            if (a == 0)
            {
                continue;
            }
            Assert.Equal(UInt128.One, Field127.Multiply(a, Field127.Inverse(a)));
            Assert.Equal(Field127.Add(Field127.Add(a, a), a), Field127.Multiply(a, 3));
        }
    }

    [Fact]
    public void Reconstruct_AnyThresholdSubset_RecoversSecret()
    {
        using var random = new DeterministicRandom(6);
        for (int trial = 0; trial < 30; trial++)
        {
            int holders = 1 + random.Next(30);
            int t = 1 + random.Next(holders);
            int[] xs = Enumerable.Range(0, holders).Select(i => 1 + i * 7 + random.Next(5)).Distinct().ToArray();
            t = Math.Min(t, xs.Length);
            byte[] secret = new byte[32];
            random.Fill(secret);
            byte[][] shares = ShamirSecretSharing.Split(secret, t, xs, random.Fill);
            int[] pick = Enumerable.Range(0, xs.Length).OrderBy(_ => random.Next(1000)).Take(t).ToArray();
            byte[] recovered = new byte[32];
            ShamirSecretSharing.Reconstruct(pick.Select(i => xs[i]).ToArray(), pick.Select(i => shares[i]).ToList(), recovered);
            Assert.Equal(secret, recovered);
        }
    }

    [Fact]
    public void Reconstruct_FewerThanThreshold_DoesNotRecoverSecret()
    {
        using var random = new DeterministicRandom(8);
        byte[] secret = new byte[32];
        random.Fill(secret);
        int[] xs = [1, 2, 3, 4, 5, 6];
        byte[][] shares = ShamirSecretSharing.Split(secret, 4, xs, random.Fill);
        byte[] recovered = new byte[32];
        // Three shares of a degree-3 polynomial interpolate a different constant (with overwhelming probability
        // it is not even a valid 32-byte encoding).
        try
        {
            ShamirSecretSharing.Reconstruct(xs[..3], shares[..3].ToList(), recovered);
            Assert.NotEqual(secret, recovered);
        }
        catch (CryptographicException)
        {
        }
    }

    [Fact]
    public void Reconstruct_OneBitFlippedShare_DoesNotGiveTheSecret()
    {
        using var random = new DeterministicRandom(9);
        byte[] secret = new byte[32];
        random.Fill(secret);
        int[] xs = [1, 2, 3];
        byte[][] shares = ShamirSecretSharing.Split(secret, 3, xs, random.Fill);
        shares[1][5] ^= 1;
        byte[] recovered = new byte[32];
        // Shamir alone does not detect this (the session checks each share against its dealer's commitment), but
        // the result is never the secret.
        try
        {
            ShamirSecretSharing.Reconstruct(xs, shares, recovered);
            Assert.NotEqual(secret, recovered);
        }
        catch (CryptographicException)
        {
        }
        shares[1][5] ^= 1;
        ShamirSecretSharing.Reconstruct(xs, shares, recovered);
        Assert.Equal(secret, recovered);
    }
}
