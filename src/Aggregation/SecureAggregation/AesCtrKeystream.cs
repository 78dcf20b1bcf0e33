using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Security.Cryptography;
using X86Aes = System.Runtime.Intrinsics.X86.Aes;

namespace Federated.Aggregation.SecureAggregation;

/// <summary>How keystream words are combined into the destination.</summary>
internal enum KeystreamOperation
{
    Store,
    Add,
    Subtract,
    Xor,
}

/// <summary>Which AES implementation produces the keystream; both give the same bytes.</summary>
internal enum AesBackend
{
    /// <summary>AES-NI when the CPU has it, otherwise <see cref="Portable"/>.</summary>
    Auto,

    /// <summary>System.Runtime.Intrinsics.X86.Aes, eight blocks in flight.</summary>
    AesNi,

    /// <summary>System.Security.Cryptography.Aes.EncryptEcb over counter blocks.</summary>
    Portable,
}

/// <summary>
/// AES-CTR keystream (NIST SP 800-38A, 6.5) with a 128-bit big-endian counter block incremented by one per block,
/// applied to a span of uint words (four words per 16-byte block, little-endian).
/// </summary>
/// <remarks>
/// .NET 10 exposes only 128-bit AESENC (no VAES), so the AES-NI path keeps eight independent blocks in flight to
/// cover the instruction latency. The key schedule is FIPS-197 5.2, computed in software once per key.
/// </remarks>
internal sealed class AesCtrKeystream : IDisposable
{
    private const int BlockBytes = 16;
    private const int PortableBatchBlocks = 256;

    private static readonly byte[] s_sbox = BuildSbox();

    private readonly byte[] _roundKeys;
    private readonly int _rounds;
    private readonly AesBackend _backend;
    private System.Security.Cryptography.Aes? _portable;

    public AesCtrKeystream(ReadOnlySpan<byte> key, AesBackend backend = AesBackend.Auto)
    {
        if (key.Length != 16 && key.Length != 32)
        {
            throw new ArgumentException($"AES key length is {key.Length} bytes; allowed are 16 and 32.", nameof(key));
        }
        if (backend == AesBackend.AesNi && !X86Aes.IsSupported)
        {
            throw new PlatformNotSupportedException("AES-NI is not available on this CPU.");
        }
        _backend = backend == AesBackend.Auto ? (X86Aes.IsSupported && Ssse3.IsSupported ? AesBackend.AesNi : AesBackend.Portable) : backend;
        _rounds = key.Length == 16 ? 10 : 14;
        _roundKeys = ExpandKey(key);
        if (_backend == AesBackend.Portable)
        {
            _portable = System.Security.Cryptography.Aes.Create();
            _portable.Key = key.ToArray();
        }
    }

    public AesBackend Backend => _backend;

    /// <summary>Combines the keystream starting at counter block <paramref name="counter"/> into dest.</summary>
    public void Apply(UInt128 counter, Span<uint> dest, KeystreamOperation operation)
    {
        ObjectDisposedException.ThrowIf(_roundKeys.Length == 0 || (_backend == AesBackend.Portable && _portable is null), this);
        switch (operation)
        {
            case KeystreamOperation.Store: Apply<StoreSink>(counter, dest); break;
            case KeystreamOperation.Add: Apply<AddSink>(counter, dest); break;
            case KeystreamOperation.Subtract: Apply<SubtractSink>(counter, dest); break;
            case KeystreamOperation.Xor: Apply<XorSink>(counter, dest); break;
            default: throw new ArgumentOutOfRangeException(nameof(operation), operation, "unknown keystream operation.");
        }
    }

    public void Dispose()
    {
        CryptographicOperations.ZeroMemory(_roundKeys);
        _portable?.Dispose();
        _portable = null;
    }

    private void Apply<TSink>(UInt128 counter, Span<uint> dest)
        where TSink : struct, IKeystreamSink
    {
        int fullBlocks = dest.Length / 4;
        Span<uint> head = dest[..(fullBlocks * 4)];
        if (_backend == AesBackend.AesNi)
        {
            if (_rounds == 10)
            {
                ApplyAesNi128<TSink>(counter, head);
            }
            else
            {
                ApplyAesNiGeneric<TSink>(counter, head);
            }
        }
        else
        {
            ApplyPortable<TSink>(counter, head);
        }
        int tail = dest.Length - head.Length;
        if (tail > 0)
        {
            Span<uint> block = stackalloc uint[4];
            block.Clear();
            if (_backend == AesBackend.AesNi)
            {
                ApplyAesNiGeneric<StoreSink>(counter + (ulong)fullBlocks, block);
            }
            else
            {
                ApplyPortable<StoreSink>(counter + (ulong)fullBlocks, block);
            }
            for (int i = 0; i < tail; i++)
            {
                dest[head.Length + i] = TSink.Combine(dest[head.Length + i], block[i]);
            }
        }
    }

    private static readonly Vector128<byte> s_reverse = Vector128.Create((byte)15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> CounterBlock(UInt128 counter)
    {
        // Lanes (lo, hi) little-endian, byte-reversed, give the big-endian 128-bit counter block.
        return Ssse3.Shuffle(Vector128.Create((ulong)counter, (ulong)(counter >> 64)).AsByte(), s_reverse);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ApplyAesNi128<TSink>(UInt128 counter, Span<uint> dest)
        where TSink : struct, IKeystreamSink
    {
        ref byte rk = ref MemoryMarshal.GetArrayDataReference(_roundKeys);
        var k0 = Vector128.LoadUnsafe(ref rk, 0);
        var k1 = Vector128.LoadUnsafe(ref rk, 16);
        var k2 = Vector128.LoadUnsafe(ref rk, 32);
        var k3 = Vector128.LoadUnsafe(ref rk, 48);
        var k4 = Vector128.LoadUnsafe(ref rk, 64);
        var k5 = Vector128.LoadUnsafe(ref rk, 80);
        var k6 = Vector128.LoadUnsafe(ref rk, 96);
        var k7 = Vector128.LoadUnsafe(ref rk, 112);
        var k8 = Vector128.LoadUnsafe(ref rk, 128);
        var k9 = Vector128.LoadUnsafe(ref rk, 144);
        var k10 = Vector128.LoadUnsafe(ref rk, 160);
        ref uint d = ref MemoryMarshal.GetReference(dest);
        int blocks = dest.Length / 4;
        int i = 0;
        for (; i + 8 <= blocks; i += 8)
        {
            UInt128 c = counter + (ulong)i;
            var s0 = CounterBlock(c) ^ k0;
            var s1 = CounterBlock(c + 1) ^ k0;
            var s2 = CounterBlock(c + 2) ^ k0;
            var s3 = CounterBlock(c + 3) ^ k0;
            var s4 = CounterBlock(c + 4) ^ k0;
            var s5 = CounterBlock(c + 5) ^ k0;
            var s6 = CounterBlock(c + 6) ^ k0;
            var s7 = CounterBlock(c + 7) ^ k0;
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k1);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k2);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k3);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k4);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k5);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k6);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k7);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k8);
            Round(ref s0, ref s1, ref s2, ref s3, ref s4, ref s5, ref s6, ref s7, k9);
            nuint o = (nuint)i * 4;
            Emit<TSink>(ref d, o, X86Aes.EncryptLast(s0, k10));
            Emit<TSink>(ref d, o + 4, X86Aes.EncryptLast(s1, k10));
            Emit<TSink>(ref d, o + 8, X86Aes.EncryptLast(s2, k10));
            Emit<TSink>(ref d, o + 12, X86Aes.EncryptLast(s3, k10));
            Emit<TSink>(ref d, o + 16, X86Aes.EncryptLast(s4, k10));
            Emit<TSink>(ref d, o + 20, X86Aes.EncryptLast(s5, k10));
            Emit<TSink>(ref d, o + 24, X86Aes.EncryptLast(s6, k10));
            Emit<TSink>(ref d, o + 28, X86Aes.EncryptLast(s7, k10));
        }
        if (i < blocks)
        {
            ApplyAesNiGeneric<TSink>(counter + (ulong)i, dest[(i * 4)..]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Round(
        ref Vector128<byte> s0, ref Vector128<byte> s1, ref Vector128<byte> s2, ref Vector128<byte> s3,
        ref Vector128<byte> s4, ref Vector128<byte> s5, ref Vector128<byte> s6, ref Vector128<byte> s7, Vector128<byte> k)
    {
        s0 = X86Aes.Encrypt(s0, k);
        s1 = X86Aes.Encrypt(s1, k);
        s2 = X86Aes.Encrypt(s2, k);
        s3 = X86Aes.Encrypt(s3, k);
        s4 = X86Aes.Encrypt(s4, k);
        s5 = X86Aes.Encrypt(s5, k);
        s6 = X86Aes.Encrypt(s6, k);
        s7 = X86Aes.Encrypt(s7, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Emit<TSink>(ref uint dest, nuint offset, Vector128<byte> keystream)
        where TSink : struct, IKeystreamSink
    {
        TSink.Combine(Vector128.LoadUnsafe(ref dest, offset), keystream.AsUInt32()).StoreUnsafe(ref dest, offset);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ApplyAesNiGeneric<TSink>(UInt128 counter, Span<uint> dest)
        where TSink : struct, IKeystreamSink
    {
        ref byte rk = ref MemoryMarshal.GetArrayDataReference(_roundKeys);
        ref uint d = ref MemoryMarshal.GetReference(dest);
        int blocks = dest.Length / 4;
        for (int i = 0; i < blocks; i++)
        {
            var s = CounterBlock(counter + (ulong)i) ^ Vector128.LoadUnsafe(ref rk, 0);
            for (int r = 1; r < _rounds; r++)
            {
                s = X86Aes.Encrypt(s, Vector128.LoadUnsafe(ref rk, (nuint)(r * BlockBytes)));
            }
            s = X86Aes.EncryptLast(s, Vector128.LoadUnsafe(ref rk, (nuint)(_rounds * BlockBytes)));
            Emit<TSink>(ref d, (nuint)i * 4, s);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ApplyPortable<TSink>(UInt128 counter, Span<uint> dest)
        where TSink : struct, IKeystreamSink
    {
        var aes = _portable!;
        int blocks = dest.Length / 4;
        byte[] counters = new byte[PortableBatchBlocks * BlockBytes];
        byte[] keystream = new byte[PortableBatchBlocks * BlockBytes];
        for (int done = 0; done < blocks; done += PortableBatchBlocks)
        {
            int batch = Math.Min(PortableBatchBlocks, blocks - done);
            for (int j = 0; j < batch; j++)
            {
                BinaryPrimitives.WriteUInt128BigEndian(counters.AsSpan(j * BlockBytes, BlockBytes), counter + (ulong)(done + j));
            }
            int bytes = batch * BlockBytes;
            aes.EncryptEcb(counters.AsSpan(0, bytes), keystream.AsSpan(0, bytes), PaddingMode.None);
            ReadOnlySpan<uint> words = MemoryMarshal.Cast<byte, uint>(keystream.AsSpan(0, bytes));
            Span<uint> target = dest.Slice(done * 4, batch * 4);
            for (int w = 0; w < words.Length; w++)
            {
                uint word = BitConverter.IsLittleEndian ? words[w] : BinaryPrimitives.ReverseEndianness(words[w]);
                target[w] = TSink.Combine(target[w], word);
            }
        }
        CryptographicOperations.ZeroMemory(keystream);
    }

    /// <summary>FIPS-197 5.2 key expansion; the round keys are the byte sequence AESENC expects.</summary>
    internal static byte[] ExpandKey(ReadOnlySpan<byte> key)
    {
        int nk = key.Length / 4;
        int nr = nk + 6;
        int words = 4 * (nr + 1);
        byte[] w = new byte[words * 4];
        key.CopyTo(w);
        Span<byte> temp = stackalloc byte[4];
        byte rcon = 1;
        for (int i = nk; i < words; i++)
        {
            w.AsSpan((i - 1) * 4, 4).CopyTo(temp);
            if (i % nk == 0)
            {
                byte t0 = temp[0];
                temp[0] = (byte)(s_sbox[temp[1]] ^ rcon);
                temp[1] = s_sbox[temp[2]];
                temp[2] = s_sbox[temp[3]];
                temp[3] = s_sbox[t0];
                rcon = (byte)((rcon << 1) ^ ((rcon & 0x80) != 0 ? 0x1B : 0));
            }
            else if (nk > 6 && i % nk == 4)
            {
                for (int j = 0; j < 4; j++)
                {
                    temp[j] = s_sbox[temp[j]];
                }
            }
            for (int j = 0; j < 4; j++)
            {
                w[i * 4 + j] = (byte)(w[(i - nk) * 4 + j] ^ temp[j]);
            }
        }
        CryptographicOperations.ZeroMemory(temp);
        return w;
    }

    // The S-box from its definition (FIPS-197 5.1.1): multiplicative inverse in GF(2^8) then the affine map.
    private static byte[] BuildSbox()
    {
        byte[] sbox = new byte[256];
        for (int x = 0; x < 256; x++)
        {
            byte inv = 0;
            if (x != 0)
            {
                // x^254 = x^-1 in GF(2^8).
                byte result = 1;
                byte power = (byte)x;
                for (int e = 254; e > 0; e >>= 1)
                {
                    if ((e & 1) != 0)
                    {
                        result = GfMultiply(result, power);
                    }
                    power = GfMultiply(power, power);
                }
                inv = result;
            }
            int s = inv ^ RotateLeft(inv, 1) ^ RotateLeft(inv, 2) ^ RotateLeft(inv, 3) ^ RotateLeft(inv, 4) ^ 0x63;
            sbox[x] = (byte)s;
        }
        return sbox;
    }

    private static byte RotateLeft(byte value, int shift) => (byte)((value << shift) | (value >> (8 - shift)));

    private static byte GfMultiply(byte a, byte b)
    {
        int result = 0;
        int aa = a;
        for (int i = 0; i < 8; i++)
        {
            if ((b & (1 << i)) != 0)
            {
                result ^= aa;
            }
            aa <<= 1;
            if ((aa & 0x100) != 0)
            {
                aa ^= 0x11B;
            }
        }
        return (byte)result;
    }

    private interface IKeystreamSink
    {
        static abstract Vector128<uint> Combine(Vector128<uint> dest, Vector128<uint> keystream);

        static abstract uint Combine(uint dest, uint keystream);
    }

    private readonly struct StoreSink : IKeystreamSink
    {
        public static Vector128<uint> Combine(Vector128<uint> dest, Vector128<uint> keystream) => keystream;

        public static uint Combine(uint dest, uint keystream) => keystream;
    }

    private readonly struct AddSink : IKeystreamSink
    {
        public static Vector128<uint> Combine(Vector128<uint> dest, Vector128<uint> keystream) => dest + keystream;

        public static uint Combine(uint dest, uint keystream) => dest + keystream;
    }

    private readonly struct SubtractSink : IKeystreamSink
    {
        public static Vector128<uint> Combine(Vector128<uint> dest, Vector128<uint> keystream) => dest - keystream;

        public static uint Combine(uint dest, uint keystream) => dest - keystream;
    }

    private readonly struct XorSink : IKeystreamSink
    {
        public static Vector128<uint> Combine(Vector128<uint> dest, Vector128<uint> keystream) => dest ^ keystream;

        public static uint Combine(uint dest, uint keystream) => dest ^ keystream;
    }
}
