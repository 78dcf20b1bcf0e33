namespace Federated.Aggregation.Privacy;

/// <summary>A client's encoded update: values in Z_(2^b) for SecAgg, and the update's norm before clipping.</summary>
public sealed record DSkellamEncoding(uint[] Values, double NormBeforeClipping, int RoundingAttempts);

/// <summary>
/// Client side of the distributed Skellam mechanism: clip, rotate, scale, conditionally round, add this client's
/// share of Skellam noise, reduce into Z_(2^b) (TFF DistributedDpSumFactory with the Skellam mechanism).
/// </summary>
public sealed class DSkellamEncoder
{
    private const int MaxRoundingAttempts = 1000;
    private readonly DSkellamPlan _plan;
    private readonly HadamardRotation _rotation;
    private readonly IRandomSource _random;

    /// <summary>Creates an encoder for a plan and the round manifest's rotation seed; randomness is cryptographic by default.</summary>
    public DSkellamEncoder(DSkellamPlan plan, ReadOnlySpan<byte> rotationSeed, IRandomSource? random = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        _plan = plan;
        _rotation = new HadamardRotation(plan.Parameters.Dimension, rotationSeed);
        _random = random ?? CryptoRandomSource.Instance;
    }

    /// <summary>Encodes one update of length d into PaddedDimension values in Z_(2^b).</summary>
    public DSkellamEncoding Encode(ReadOnlySpan<float> update)
    {
        long[] integers = EncodeToIntegers(update, out double norm, out int attempts);
        var values = new uint[integers.Length];
        ulong mask = _plan.Parameters.Bits == 32 ? uint.MaxValue : (1UL << _plan.Parameters.Bits) - 1;
        for (int i = 0; i < values.Length; i++)
        {
            // Two's-complement masking is reduction modulo 2^b for negative values too.
            values[i] = (uint)((ulong)integers[i] & mask);
        }
        return new DSkellamEncoding(values, norm, attempts);
    }

    // Everything but the modular reduction, so tests can see the integers that the ring must hold.
    internal long[] EncodeToIntegers(ReadOnlySpan<float> update, out double normBeforeClipping, out int attempts)
    {
        if (update.Length != _plan.Parameters.Dimension)
        {
            throw new ArgumentException($"update has {update.Length} values; the plan expects {_plan.Parameters.Dimension}", nameof(update));
        }
        float[] clipped = update.ToArray();
        normBeforeClipping = L2Clipping.ClipInPlace(clipped, _plan.Parameters.ClipNorm);
        var rotated = new double[_plan.PaddedDimension];
        _rotation.Forward(clipped, rotated);
        double scale = _plan.Scale;
        for (int i = 0; i < rotated.Length; i++)
        {
            rotated[i] *= scale;
        }

        var sampler = new NoiseSampler(_random);
        var result = new long[rotated.Length];
        // Compared in exact integers: the sensitivity the accountant prices is this bound, so no rounding may let a vector past it.
        var boundSquared = (UInt128)_plan.NormBoundSquared;
        attempts = 0;
        while (true)
        {
            // Conditional stochastic rounding: unbiased rounding, redrawn until the norm bound holds (probability >= 1 - beta).
            attempts++;
            UInt128 normSquared = 0;
            for (int i = 0; i < rotated.Length; i++)
            {
                double floor = Math.Floor(rotated[i]);
                long r = (long)floor + sampler.Bernoulli(rotated[i] - floor);
                result[i] = r;
                ulong magnitude = (ulong)Math.Abs(r);
                normSquared += (UInt128)magnitude * magnitude;
            }
            if (normSquared <= boundSquared)
            {
                break;
            }
            if (attempts >= MaxRoundingAttempts)
            {
                throw new InvalidOperationException($"conditional rounding failed {MaxRoundingAttempts} times; the plan's norm bound does not match this update");
            }
        }
        double mu = _plan.LocalSkellamMu;
        for (int i = 0; i < result.Length; i++)
        {
            result[i] += sampler.Skellam(mu);
        }
        return result;
    }
}
