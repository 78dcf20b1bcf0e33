using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Federated.Aggregation.SecureAggregation;

/// <summary>Vectorised arithmetic on vectors of the ring Z_(2^b), 16 &lt;= b &lt;= 32, stored as <see cref="uint"/>.</summary>
/// <remarks>
/// Sums are taken modulo 2^32 by the hardware and reduced modulo 2^b once at the end: since 2^b divides 2^32,
/// reducing late gives the same result as reducing after every operation.
/// </remarks>
public static class RingVector
{
    /// <summary>Smallest supported bit width b.</summary>
    public const int MinBits = 16;

    /// <summary>Largest supported bit width b.</summary>
    public const int MaxBits = 32;

    /// <summary>The mask 2^b - 1 that reduces a uint modulo 2^b.</summary>
    public static uint ModulusMask(int bits)
    {
        ValidateBits(bits);
        return bits == 32 ? uint.MaxValue : (1u << bits) - 1;
    }

    /// <summary>Throws unless 16 &lt;= bits &lt;= 32.</summary>
    public static void ValidateBits(int bits)
    {
        if (bits < MinBits || bits > MaxBits)
        {
            throw new ArgumentOutOfRangeException(nameof(bits), bits, $"bits must be between {MinBits} and {MaxBits}.");
        }
    }

    /// <summary>accumulator[i] += values[i] modulo 2^32 (reduce with <see cref="Reduce"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void AddInPlace(Span<uint> accumulator, ReadOnlySpan<uint> values)
    {
        if (accumulator.Length != values.Length)
        {
            throw new ArgumentException($"values has length {values.Length}, expected {accumulator.Length}.", nameof(values));
        }
        ref uint acc = ref MemoryMarshal.GetReference(accumulator);
        ref uint src = ref MemoryMarshal.GetReference(values);
        nuint n = (nuint)accumulator.Length;
        nuint i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 64 <= n; i += 64)
            {
                var a0 = Vector512.LoadUnsafe(ref acc, i) + Vector512.LoadUnsafe(ref src, i);
                var a1 = Vector512.LoadUnsafe(ref acc, i + 16) + Vector512.LoadUnsafe(ref src, i + 16);
                var a2 = Vector512.LoadUnsafe(ref acc, i + 32) + Vector512.LoadUnsafe(ref src, i + 32);
                var a3 = Vector512.LoadUnsafe(ref acc, i + 48) + Vector512.LoadUnsafe(ref src, i + 48);
                a0.StoreUnsafe(ref acc, i);
                a1.StoreUnsafe(ref acc, i + 16);
                a2.StoreUnsafe(ref acc, i + 32);
                a3.StoreUnsafe(ref acc, i + 48);
            }
        }
        int width = Vector<uint>.Count;
        for (; i + (nuint)width <= n; i += (nuint)width)
        {
            (Vector.LoadUnsafe(ref acc, i) + Vector.LoadUnsafe(ref src, i)).StoreUnsafe(ref acc, i);
        }
        for (; i < n; i++)
        {
            Unsafe.Add(ref acc, i) += Unsafe.Add(ref src, i);
        }
    }

    /// <summary>accumulator[i] -= values[i] modulo 2^32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void SubtractInPlace(Span<uint> accumulator, ReadOnlySpan<uint> values)
    {
        if (accumulator.Length != values.Length)
        {
            throw new ArgumentException($"values has length {values.Length}, expected {accumulator.Length}.", nameof(values));
        }
        ref uint acc = ref MemoryMarshal.GetReference(accumulator);
        ref uint src = ref MemoryMarshal.GetReference(values);
        nuint n = (nuint)accumulator.Length;
        nuint i = 0;
        int width = Vector<uint>.Count;
        for (; i + (nuint)width <= n; i += (nuint)width)
        {
            (Vector.LoadUnsafe(ref acc, i) - Vector.LoadUnsafe(ref src, i)).StoreUnsafe(ref acc, i);
        }
        for (; i < n; i++)
        {
            Unsafe.Add(ref acc, i) -= Unsafe.Add(ref src, i);
        }
    }

    /// <summary>
    /// Adds values into accumulator and returns the OR of the bits of values outside the ring mask in the same
    /// pass, so that a caller can validate and accumulate with one read of the data.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static uint AddInPlaceCheckingRange(Span<uint> accumulator, ReadOnlySpan<uint> values, uint modulusMask)
    {
        ref uint acc = ref MemoryMarshal.GetReference(accumulator);
        ref uint src = ref MemoryMarshal.GetReference(values);
        nuint n = (nuint)values.Length;
        nuint i = 0;
        uint outside = ~modulusMask;
        uint bad = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var badV = Vector512<uint>.Zero;
            var outsideV = Vector512.Create(outside);
            for (; i + 32 <= n; i += 32)
            {
                var s0 = Vector512.LoadUnsafe(ref src, i);
                var s1 = Vector512.LoadUnsafe(ref src, i + 16);
                badV |= (s0 | s1) & outsideV;
                (Vector512.LoadUnsafe(ref acc, i) + s0).StoreUnsafe(ref acc, i);
                (Vector512.LoadUnsafe(ref acc, i + 16) + s1).StoreUnsafe(ref acc, i + 16);
            }
            bad |= Vector512.GreaterThanAny(badV, Vector512<uint>.Zero) ? outside : 0;
        }
        int width = Vector<uint>.Count;
        var badW = Vector<uint>.Zero;
        var outsideW = new Vector<uint>(outside);
        for (; i + (nuint)width <= n; i += (nuint)width)
        {
            var s = Vector.LoadUnsafe(ref src, i);
            badW |= s & outsideW;
            (Vector.LoadUnsafe(ref acc, i) + s).StoreUnsafe(ref acc, i);
        }
        bad |= Vector.GreaterThanAny(badW, Vector<uint>.Zero) ? outside : 0;
        for (; i < n; i++)
        {
            uint s = Unsafe.Add(ref src, i);
            bad |= s & outside;
            Unsafe.Add(ref acc, i) += s;
        }
        return bad;
    }

    /// <summary>Reduces every element modulo 2^b in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Reduce(Span<uint> values, int bits)
    {
        uint mask = ModulusMask(bits);
        if (mask == uint.MaxValue)
        {
            return;
        }
        ref uint v = ref MemoryMarshal.GetReference(values);
        nuint n = (nuint)values.Length;
        nuint i = 0;
        int width = Vector<uint>.Count;
        var maskV = new Vector<uint>(mask);
        for (; i + (nuint)width <= n; i += (nuint)width)
        {
            (Vector.LoadUnsafe(ref v, i) & maskV).StoreUnsafe(ref v, i);
        }
        for (; i < n; i++)
        {
            Unsafe.Add(ref v, i) &= mask;
        }
    }

    /// <summary>True when every element is below 2^b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static bool AllInRing(ReadOnlySpan<uint> values, int bits)
    {
        uint outside = ~ModulusMask(bits);
        if (outside == 0)
        {
            return true;
        }
        ref uint v = ref MemoryMarshal.GetReference(values);
        nuint n = (nuint)values.Length;
        nuint i = 0;
        int width = Vector<uint>.Count;
        var bad = Vector<uint>.Zero;
        var outsideV = new Vector<uint>(outside);
        for (; i + (nuint)width <= n; i += (nuint)width)
        {
            bad |= Vector.LoadUnsafe(ref v, i) & outsideV;
        }
        uint badScalar = 0;
        for (; i < n; i++)
        {
            badScalar |= Unsafe.Add(ref v, i) & outside;
        }
        return badScalar == 0 && bad == Vector<uint>.Zero;
    }
}
