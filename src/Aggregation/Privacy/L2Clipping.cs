namespace Federated.Aggregation.Privacy;

/// <summary>L2 clipping of a whole model update (all adapter tensors flattened together).</summary>
public static class L2Clipping
{
    /// <summary>The L2 norm over all tensors, accumulated in double.</summary>
    public static double Norm(IReadOnlyList<float[]> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        double sum = 0;
        foreach (float[] t in tensors)
        {
            ArgumentNullException.ThrowIfNull(t);
            foreach (float v in t)
            {
                if (!float.IsFinite(v))
                {
                    throw new ArgumentException("update contains NaN or infinity", nameof(tensors));
                }
                sum += (double)v * v;
            }
        }
        return Math.Sqrt(sum);
    }

    /// <summary>Scales all tensors so their joint norm is at most clipNorm; returns the norm before clipping.</summary>
    public static double ClipInPlace(IReadOnlyList<float[]> tensors, double clipNorm)
    {
        if (!(clipNorm > 0) || double.IsInfinity(clipNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(clipNorm), clipNorm, "clip norm must be a finite number > 0");
        }
        double norm = Norm(tensors);
        if (norm > clipNorm)
        {
            double factor = clipNorm / norm;
            foreach (float[] t in tensors)
            {
                for (int i = 0; i < t.Length; i++)
                {
                    t[i] = (float)(t[i] * factor);
                }
            }
        }
        return norm;
    }

    /// <summary>Single-vector form of <see cref="ClipInPlace(IReadOnlyList{float[]}, double)"/>.</summary>
    public static double ClipInPlace(float[] update, double clipNorm) => ClipInPlace([update], clipNorm);
}
