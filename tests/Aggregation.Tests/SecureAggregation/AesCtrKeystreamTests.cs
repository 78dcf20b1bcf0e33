using System.Runtime.InteropServices;
using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

public sealed class AesCtrKeystreamTests
{
    private const string Counter = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    private const string Plaintext = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";

    public static TheoryData<string, string, bool> Vectors()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (bool aesNi in Backends())
        {
            // NIST SP 800-38A F.5.1 CTR-AES128.Encrypt
            data.Add("2b7e151628aed2a6abf7158809cf4f3c", "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee", aesNi);
            // NIST SP 800-38A F.5.5 CTR-AES256.Encrypt
            data.Add("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c52b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6", aesNi);
        }
        return data;
    }

    private static IEnumerable<bool> Backends() =>
        System.Runtime.Intrinsics.X86.Aes.IsSupported ? [true, false] : [false];

    [Theory]
    [MemberData(nameof(Vectors))]
    public void Apply_NistSp80038aCtrVectors_MatchCiphertext(string key, string ciphertext, bool aesNi)
    {
        using var keystream = new AesCtrKeystream(Convert.FromHexString(key), aesNi ? AesBackend.AesNi : AesBackend.Portable);
        uint[] words = MemoryMarshal.Cast<byte, uint>(Convert.FromHexString(Plaintext)).ToArray();
        keystream.Apply(System.Buffers.Binary.BinaryPrimitives.ReadUInt128BigEndian(Convert.FromHexString(Counter)), words, KeystreamOperation.Xor);
        Assert.Equal(ciphertext, Convert.ToHexString(MemoryMarshal.AsBytes(words.AsSpan())).ToLowerInvariant());
    }

    [Fact]
    public void Apply_AesNiAndPortable_ProduceIdenticalStreams()
    {
        if (!System.Runtime.Intrinsics.X86.Aes.IsSupported)
        {
            return; // only the portable path exists here, and the NIST vectors cover it
        }
        using var random = new DeterministicRandom(11);
        for (int trial = 0; trial < 40; trial++)
        {
            byte[] seed = new byte[32];
            random.Fill(seed);
            using var fast = new MaskPrg(seed, AesBackend.AesNi);
            using var portable = new MaskPrg(seed, AesBackend.Portable);
            long offset = random.Next(100_000);
            int length = random.Next(3000);
            var a = new uint[length];
            var b = new uint[length];
            fast.Apply(offset, a, KeystreamOperation.Store);
            portable.Apply(offset, b, KeystreamOperation.Store);
            Assert.Equal(b, a);
        }
    }

    [Fact]
    public void Apply_CounterCarryAcrossLowWord_MatchesPortable()
    {
        if (!System.Runtime.Intrinsics.X86.Aes.IsSupported)
        {
            return; // only the portable path exists here, and the NIST vectors cover it
        }
        byte[] key = Convert.FromHexString("2b7e151628aed2a6abf7158809cf4f3c");
        using var fast = new AesCtrKeystream(key, AesBackend.AesNi);
        using var portable = new AesCtrKeystream(key, AesBackend.Portable);
        UInt128 start = ((UInt128)5 << 64) | (ulong.MaxValue - 3);
        var a = new uint[4 * 20];
        var b = new uint[4 * 20];
        fast.Apply(start, a, KeystreamOperation.Store);
        portable.Apply(start, b, KeystreamOperation.Store);
        Assert.Equal(b, a);
    }

    [Fact]
    public void Apply_AddThenSubtract_RestoresAndChunksMatchWholeStream()
    {
        byte[] seed = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        using var prg = new MaskPrg(seed);
        var whole = new uint[1001];
        prg.Apply(0, whole, KeystreamOperation.Store);
        var pieces = new uint[1001];
        int[] cuts = [0, 3, 4, 17, 500, 999, 1001];
        for (int i = 0; i + 1 < cuts.Length; i++)
        {
            prg.Apply(cuts[i], pieces.AsSpan(cuts[i], cuts[i + 1] - cuts[i]), KeystreamOperation.Store);
        }
        Assert.Equal(whole, pieces);
        var data = Enumerable.Range(0, 1001).Select(i => (uint)i * 2654435761u).ToArray();
        var copy = data.ToArray();
        prg.Apply(0, data, KeystreamOperation.Add);
        Assert.NotEqual(copy, data);
        prg.Apply(0, data, KeystreamOperation.Subtract);
        Assert.Equal(copy, data);
    }

    [Fact]
    public void MaskPrg_DifferentSeeds_GiveDifferentStreams()
    {
        byte[] s1 = new byte[32];
        byte[] s2 = new byte[32];
        s2[31] = 1;
        using var a = new MaskPrg(s1);
        using var b = new MaskPrg(s2);
        var x = new uint[64];
        var y = new uint[64];
        a.Apply(0, x, KeystreamOperation.Store);
        b.Apply(0, y, KeystreamOperation.Store);
        Assert.NotEqual(x, y);
        Assert.Throws<ArgumentException>(() => new MaskPrg(new byte[16]));
    }
}
