using System.Numerics;

namespace Federated.Aggregation.Privacy;

/// <summary>
/// Exact sampler of the discrete Gaussian N_Z(0, sigma^2), P(x) proportional to exp(-x^2 / (2 sigma^2)) on the integers,
/// for an integer sigma^2 (Canonne, Kamath and Steinke 2020, arXiv:2004.00010, Algorithms 1-3). Every decision compares
/// uniform integers drawn from an <see cref="IRandomSource"/> with exact integer ratios: no floating point, so the
/// output cannot leak through rounding the way Box-Muller doubles do (Mironov 2012). Not thread-safe.
/// </summary>
public sealed class DiscreteGaussianSampler
{
    /// <summary>Largest sigma^2 accepted: keeps 2 sigma^2 t^2 (t = floor(sigma) + 1) below 2^128.</summary>
    public const ulong MaxSigmaSquared = 1UL << 62;

    private readonly NoiseSampler _random;
    private readonly ulong _t;
    private readonly ulong _sigmaSquared;
    private readonly UInt128 _denominator;

    /// <summary>Creates a sampler for sigma^2 in [1, <see cref="MaxSigmaSquared"/>]; randomness is cryptographic by default.</summary>
    /// <param name="sigmaSquared">sigma^2 of the distribution.</param>
    /// <param name="random">The source of uniform bytes.</param>
    /// <param name="expectedDraws">How many draws follow, to size the block read from the source (a draw takes ~100 bytes).</param>
    public DiscreteGaussianSampler(ulong sigmaSquared, IRandomSource? random = null, int expectedDraws = 1 << 10)
    {
        if (sigmaSquared is 0 or > MaxSigmaSquared)
        {
            throw new ArgumentOutOfRangeException(nameof(sigmaSquared), sigmaSquared, $"sigma^2 must be in [1, 2^62]");
        }
        _sigmaSquared = sigmaSquared;
        _t = FloorSqrt(sigmaSquared) + 1;
        // gamma = (|Y| - sigma^2/t)^2 / (2 sigma^2) = (|Y| t - sigma^2)^2 / (2 sigma^2 t^2) (CKS 2020, Algorithm 3).
        _denominator = 2 * (UInt128)sigmaSquared * _t * _t;
        ArgumentOutOfRangeException.ThrowIfNegative(expectedDraws);
        _random = new NoiseSampler(random ?? CryptoRandomSource.Instance, (int)Math.Clamp(128L * expectedDraws, 1024, 1 << 16));
    }

    /// <summary>The sigma^2 this sampler draws for.</summary>
    public ulong SigmaSquared => _sigmaSquared;

    /// <summary>One draw of N_Z(0, sigma^2).</summary>
    public long Next()
    {
        while (true)
        {
            // CKS 2020 Algorithm 3: a discrete Laplace proposal of scale t, accepted with probability exp(-gamma).
            long y = DiscreteLaplace();
            UInt128 magnitude = (UInt128)(ulong)Math.Abs(y) * _t;
            UInt128 distance = magnitude >= _sigmaSquared ? magnitude - _sigmaSquared : _sigmaSquared - magnitude;
            bool accept = distance <= ulong.MaxValue
                ? BernoulliExp(distance * distance, _denominator)
                : BernoulliExp((BigInteger)distance * distance, (BigInteger)_denominator); // |Y| beyond 2^64 / t: practically never
            if (accept)
            {
                return y;
            }
        }
    }

    /// <summary>Fills the destination with independent draws.</summary>
    public void Fill(Span<long> destination)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            destination[i] = Next();
        }
    }

    // CKS 2020 Algorithm 2 with s = 1: P(x) proportional to exp(-|x| / t) on the integers.
    private long DiscreteLaplace()
    {
        while (true)
        {
            ulong u = _random.UniformBelow(_t);
            if (!BernoulliExp((UInt128)u, (UInt128)_t))
            {
                continue;
            }
            // Geometric count of Bernoulli(exp(-1)) successes: with u, a geometric of ratio exp(-1/t) in total.
            ulong v = 0;
            while (BernoulliExpAtMostOne(UInt128.One, UInt128.One))
            {
                v++;
            }
            long x = checked((long)(v * _t + u));
            bool negative = _random.NextBit();
            if (negative && x == 0)
            {
                continue; // zero would otherwise be drawn twice as often as its weight
            }
            return negative ? -x : x;
        }
    }

    // Bernoulli(exp(-num/den)) for num >= 0 (CKS 2020, Algorithm 1): one Bernoulli(exp(-1)) per whole unit of gamma, then the fraction.
    internal bool BernoulliExp<T>(T numerator, T denominator) where T : IBinaryInteger<T>
    {
        (T whole, T rest) = T.DivRem(numerator, denominator);
        for (T i = T.Zero; i < whole; i++)
        {
            if (!BernoulliExpAtMostOne(T.One, T.One))
            {
                return false;
            }
        }
        return BernoulliExpAtMostOne(rest, denominator);
    }

    // Bernoulli(exp(-x)) for x = num/den in [0, 1] (CKS 2020, Algorithm 1): K = 1; while Bernoulli(x / K) K++; true iff K is odd.
    // Bernoulli(x / K) is drawn as Bernoulli(x) and Bernoulli(1 / K), independent, so no product overflows.
    private bool BernoulliExpAtMostOne<T>(T numerator, T denominator) where T : IBinaryInteger<T>
    {
        ulong k = 1;
        while (_random.UniformBelow(k) == 0 && _random.Bernoulli(numerator, denominator))
        {
            k++;
        }
        return (k & 1) == 1;
    }

    internal static ulong FloorSqrt(ulong value)
    {
        ulong root = (ulong)Math.Sqrt(value);
        // The double estimate can be off by one either way near 2^64; settle it in integers.
        while (root > 0 && (UInt128)root * root > value)
        {
            root--;
        }
        while ((UInt128)(root + 1) * (root + 1) <= value)
        {
            root++;
        }
        return root;
    }
}
