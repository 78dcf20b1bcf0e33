namespace Federated.Aggregation.Privacy;

/// <summary>In-place iterative radix-2 complex FFT over split real/imaginary arrays (Cooley-Tukey).</summary>
internal static class Fft
{
    /// <summary>Transforms (re, im) in place; the length must be a power of two. Inverse includes the 1/n factor.</summary>
    public static void Transform(double[] re, double[] im, bool inverse)
    {
        ArgumentNullException.ThrowIfNull(re);
        ArgumentNullException.ThrowIfNull(im);
        int n = re.Length;
        if (im.Length != n || n == 0 || (n & (n - 1)) != 0)
        {
            throw new ArgumentException($"FFT length must be a power of two with equal real and imaginary parts, got {n} and {im.Length}");
        }
        // Bit-reversal permutation.
        for (int i = 1, j = 0; i < n; i++)
        {
            int bit = n >> 1;
            for (; (j & bit) != 0; bit >>= 1)
            {
                j ^= bit;
            }
            j ^= bit;
            if (i < j)
            {
                (re[i], re[j]) = (re[j], re[i]);
                (im[i], im[j]) = (im[j], im[i]);
            }
        }
        double sign = inverse ? 1.0 : -1.0;
        // Twiddles come from a table computed directly per stage (not by repeated multiplication), so the
        // rounding error stays O(log n) ulps rather than growing with n.
        var cos = new double[n / 2];
        var sin = new double[n / 2];
        for (int k = 0; k < n / 2; k++)
        {
            double angle = 2 * Math.PI * k / n;
            cos[k] = Math.Cos(angle);
            sin[k] = sign * Math.Sin(angle);
        }
        for (int len = 2; len <= n; len <<= 1)
        {
            int half = len >> 1;
            int stride = n / len;
            for (int start = 0; start < n; start += len)
            {
                for (int k = 0; k < half; k++)
                {
                    double wr = cos[k * stride], wi = sin[k * stride];
                    int a = start + k, b = a + half;
                    double tr = re[b] * wr - im[b] * wi;
                    double ti = re[b] * wi + im[b] * wr;
                    re[b] = re[a] - tr;
                    im[b] = im[a] - ti;
                    re[a] += tr;
                    im[a] += ti;
                }
            }
        }
        if (inverse)
        {
            double scale = 1.0 / n;
            for (int i = 0; i < n; i++)
            {
                re[i] *= scale;
                im[i] *= scale;
            }
        }
    }

    /// <summary>Smallest power of two &gt;= n.</summary>
    public static int NextPowerOfTwo(long n)
    {
        if (n > 1 << 30)
        {
            throw new ArgumentOutOfRangeException(nameof(n), n, "FFT length must be <= 2^30");
        }
        int p = 1;
        while (p < n)
        {
            p <<= 1;
        }
        return p;
    }
}
