using System.Buffers.Binary;
using System.Numerics;

namespace Federated.Aggregation.Privacy;

/// <summary>
/// Draws uniforms, Bernoulli, Poisson and Skellam variates from an <see cref="IRandomSource"/>
/// (buffered, so the cryptographic source is called in large blocks). Not thread-safe.
/// </summary>
public sealed class NoiseSampler
{
    private readonly IRandomSource _source;
    private readonly byte[] _buffer;
    private int _position;
    private ulong _bits;
    private int _bitsLeft;

    /// <summary>Draws from the source in blocks of <paramref name="bufferBytes"/> (a multiple of 8; smaller for few draws).</summary>
    public NoiseSampler(IRandomSource source, int bufferBytes = 1 << 16)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (bufferBytes < 8 || bufferBytes % 8 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bufferBytes), bufferBytes, "buffer must be a positive multiple of 8 bytes");
        }
        _source = source;
        _buffer = new byte[bufferBytes];
        _position = _buffer.Length;
    }

    public ulong NextUInt64()
    {
        if (_position > _buffer.Length - 8)
        {
            _source.Fill(_buffer);
            _position = 0;
        }
        ulong value = BinaryPrimitives.ReadUInt64LittleEndian(_buffer.AsSpan(_position, 8));
        _position += 8;
        return value;
    }

    /// <summary>One uniform bit.</summary>
    public bool NextBit()
    {
        if (_bitsLeft == 0)
        {
            _bits = NextUInt64();
            _bitsLeft = 64;
        }
        bool bit = (_bits & 1) != 0;
        _bits >>= 1;
        _bitsLeft--;
        return bit;
    }

    /// <summary>Uniform on {0, ..., bound - 1} by rejection from the fewest random bits: exact, no floating point.</summary>
    public ulong UniformBelow(ulong bound)
    {
        ArgumentOutOfRangeException.ThrowIfZero(bound);
        if (bound == 1)
        {
            return 0;
        }
        int shift = BitOperations.LeadingZeroCount(bound - 1);
        while (true)
        {
            ulong candidate = NextUInt64() >> shift;
            if (candidate < bound)
            {
                return candidate;
            }
        }
    }

    /// <summary>Uniform on {0, ..., bound - 1} for any unsigned or non-negative integer type, by rejection.</summary>
    public T UniformBelow<T>(T bound) where T : IBinaryInteger<T>
    {
        if (bound <= T.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(bound), bound, "bound must be > 0");
        }
        if (bound == T.One)
        {
            return T.Zero;
        }
        int bits = int.CreateChecked(T.Log2(bound - T.One)) + 1;
        Span<byte> value = stackalloc byte[(bits + 7) / 8];
        while (true)
        {
            for (int i = 0; i < value.Length; i += 8)
            {
                ulong word = NextUInt64();
                for (int j = i; j < Math.Min(i + 8, value.Length); j++)
                {
                    value[j] = (byte)(word >> (8 * (j - i)));
                }
            }
            int extra = 8 * value.Length - bits;
            value[^1] &= (byte)(0xFF >> extra);
            T candidate = T.ReadLittleEndian(value, isUnsigned: true);
            if (candidate < bound)
            {
                return candidate;
            }
        }
    }

    /// <summary>True with probability numerator / denominator exactly (0 &lt;= numerator &lt;= denominator).</summary>
    public bool Bernoulli<T>(T numerator, T denominator) where T : IBinaryInteger<T> =>
        UniformBelow(denominator) < numerator;

    /// <summary>Uniform on [0, 1) with 53 random bits (every representable multiple of 2^-53).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>1 with probability p.</summary>
    public int Bernoulli(double p) => NextDouble() < p ? 1 : 0;

    /// <summary>
    /// Poisson(mean): inversion by sequential search below 10, above it Hormann's PTRS transformed rejection
    /// (Hormann 1993; the algorithm numpy uses), both driven only by uniforms from the source.
    /// </summary>
    public long Poisson(double mean)
    {
        if (!(mean >= 0) || mean > 1e15)
        {
            throw new ArgumentOutOfRangeException(nameof(mean), mean, "Poisson mean must be in [0, 1e15]");
        }
        if (mean == 0)
        {
            return 0;
        }
        if (mean < 10)
        {
            double u = NextDouble();
            double p = Math.Exp(-mean), cumulative = p;
            long k = 0;
            while (u >= cumulative && p > 0)
            {
                k++;
                p *= mean / k;
                cumulative += p;
            }
            return k;
        }
        double slam = Math.Sqrt(mean), logLam = Math.Log(mean);
        double b = 0.931 + 2.53 * slam;
        double a = -0.059 + 0.02483 * b;
        double invAlpha = 1.1239 + 1.1328 / (b - 3.4);
        double vr = 0.9277 - 3.6224 / (b - 2);
        while (true)
        {
            double u = NextDouble() - 0.5;
            double v = NextDouble();
            double us = 0.5 - Math.Abs(u);
            double k = Math.Floor((2 * a / us + b) * u + mean + 0.43);
            if (us >= 0.07 && v <= vr)
            {
                return (long)k;
            }
            if (k < 0 || (us < 0.013 && v > us))
            {
                continue;
            }
            if (Math.Log(v) + Math.Log(invAlpha) - Math.Log(a / (us * us) + b) <= LogPoissonPmf(k, mean, logLam))
            {
                return (long)k;
            }
        }
    }

    // ln P(X = k) = -mu + k ln mu - ln k!. For large k the terms are huge and nearly cancel, so use Stirling's
    // series rearranged as (k - mu) - k log1p((k - mu) / mu) - ln(2 pi k) / 2 - corrections.
    internal static double LogPoissonPmf(double k, double mean, double logMean)
    {
        if (k < s_logFactorials.Length)
        {
            return -mean + k * logMean - s_logFactorials[(int)k];
        }
        double k2 = k * k;
        double correction = 1 / (12 * k) - 1 / (360 * k * k2) + 1 / (1260 * k2 * k2 * k);
        return (k - mean) - k * PrivacyMath.LogOnePlus((k - mean) / mean) - 0.5 * Math.Log(2 * Math.PI * k) - correction;
    }

    /// <summary>Symmetric Skellam: Poisson(mu) - Poisson(mu), mean 0, variance 2 mu.</summary>
    public long Skellam(double mu) => Poisson(mu) - Poisson(mu);

    private static readonly double[] s_logFactorials = BuildLogFactorials();

    // ln k!: exact sums of logs below 256, Stirling's series with three correction terms above (error < 1e-17 relative).
    internal static double LogFactorial(double k)
    {
        if (k < s_logFactorials.Length)
        {
            return s_logFactorials[(int)k];
        }
        double k2 = k * k;
        return k * Math.Log(k) - k + 0.5 * Math.Log(2 * Math.PI * k) + 1 / (12 * k) - 1 / (360 * k * k2) + 1 / (1260 * k2 * k2 * k);
    }

    private static double[] BuildLogFactorials()
    {
        var table = new double[256];
        for (int i = 2; i < table.Length; i++)
        {
            table[i] = table[i - 1] + Math.Log(i);
        }
        return table;
    }
}
