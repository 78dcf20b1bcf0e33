namespace Federated.Aggregation.Privacy;

/// <summary>
/// Randomized Hadamard rotation x -> H D x / sqrt(n) with n the dimension padded to a power of two and D random
/// signs from an AES-CTR stream keyed by the round manifest's seed, so every client and the server share it.
/// It flattens an update so every coordinate is small (sub-Gaussian), which bounds modular wrap-around.
/// </summary>
public sealed class HadamardRotation
{
    private const string SignLabel = "federated/dp/hadamard-signs/v1";
    private readonly byte[] _signBits;

    /// <summary>Creates the rotation for a dimension and a manifest seed (at least 16 bytes).</summary>
    public HadamardRotation(int dimension, ReadOnlySpan<byte> seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(dimension, 1 << 30);
        Dimension = dimension;
        PaddedDimension = Fft.NextPowerOfTwo(dimension);
        _signBits = new byte[(PaddedDimension + 7) / 8];
        using var stream = new AesCtrRandomSource(SignLabel, seed);
        stream.Fill(_signBits);
    }

    /// <summary>The original dimension d.</summary>
    public int Dimension { get; }

    /// <summary>d rounded up to a power of two.</summary>
    public int PaddedDimension { get; }

    /// <summary>Rotates (and zero-pads) input of length d into output of the padded length.</summary>
    public void Forward(ReadOnlySpan<float> input, Span<double> output)
    {
        if (input.Length != Dimension || output.Length != PaddedDimension)
        {
            throw new ArgumentException($"expected input of {Dimension} and output of {PaddedDimension} values, got {input.Length} and {output.Length}");
        }
        for (int i = 0; i < Dimension; i++)
        {
            output[i] = Sign(i) * input[i];
        }
        output[Dimension..].Clear();
        WalshHadamard(output);
    }

    /// <summary>Inverts <see cref="Forward"/>: rotated values of the padded length back to d values.</summary>
    public void Inverse(Span<double> rotated, Span<float> output)
    {
        if (rotated.Length != PaddedDimension || output.Length != Dimension)
        {
            throw new ArgumentException($"expected input of {PaddedDimension} and output of {Dimension} values, got {rotated.Length} and {output.Length}");
        }
        // (H D / sqrt n)^-1 = D H / sqrt n since H is symmetric with H H = n I and D D = I.
        WalshHadamard(rotated);
        for (int i = 0; i < Dimension; i++)
        {
            output[i] = (float)(Sign(i) * rotated[i]);
        }
    }

    private double Sign(int i) => ((_signBits[i >> 3] >> (i & 7)) & 1) == 0 ? 1.0 : -1.0;

    // In-place normalized fast Walsh-Hadamard transform, O(n log n).
    private static void WalshHadamard(Span<double> v)
    {
        int n = v.Length;
        for (int len = 1; len < n; len <<= 1)
        {
            for (int start = 0; start < n; start += len << 1)
            {
                Span<double> a = v.Slice(start, len), b = v.Slice(start + len, len);
                for (int k = 0; k < len; k++)
                {
                    double x = a[k], y = b[k];
                    a[k] = x + y;
                    b[k] = x - y;
                }
            }
        }
        double scale = 1.0 / Math.Sqrt(n);
        for (int i = 0; i < n; i++)
        {
            v[i] *= scale;
        }
    }
}
