namespace Federated.Aggregation.Privacy;

/// <summary>
/// Server side of the distributed Skellam mechanism: takes SecAgg's modular sum in Z_(2^b), centres it into the
/// signed range, divides by the scale, undoes the rotation and the padding.
/// </summary>
public sealed class DSkellamDecoder
{
    private readonly DSkellamPlan _plan;
    private readonly HadamardRotation _rotation;

    /// <summary>Creates a decoder for a plan and the round manifest's rotation seed.</summary>
    public DSkellamDecoder(DSkellamPlan plan, ReadOnlySpan<byte> rotationSeed)
    {
        ArgumentNullException.ThrowIfNull(plan);
        _plan = plan;
        _rotation = new HadamardRotation(plan.Parameters.Dimension, rotationSeed);
    }

    /// <summary>The noisy sum of the clients' clipped updates (length d).</summary>
    public float[] DecodeSum(ReadOnlySpan<uint> modularSum)
    {
        if (modularSum.Length != _plan.PaddedDimension)
        {
            throw new ArgumentException($"modular sum has {modularSum.Length} values; the plan expects {_plan.PaddedDimension}", nameof(modularSum));
        }
        int bits = _plan.Parameters.Bits;
        long modulus = 1L << bits, half = 1L << (bits - 1);
        var centred = new double[modularSum.Length];
        for (int i = 0; i < modularSum.Length; i++)
        {
            long v = modularSum[i];
            if (v >= modulus)
            {
                throw new ArgumentOutOfRangeException(nameof(modularSum), v, $"value at {i} is outside Z_(2^{bits})");
            }
            centred[i] = (v >= half ? v - modulus : v) / _plan.Scale;
        }
        var output = new float[_plan.Parameters.Dimension];
        _rotation.Inverse(centred, output);
        return output;
    }
}
