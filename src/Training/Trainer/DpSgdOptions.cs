using Federated.Aggregation.Privacy;

namespace Federated.Training.Trainer;

/// <summary>Record-level DP-SGD settings (Abadi et al. 2016): Poisson sampling, per-example clipping, Gaussian noise.</summary>
public sealed record DpSgdOptions
{
    /// <summary>Expected records per step, q · n: the sampling rate is this over the record count, and the noisy sum is divided by it.</summary>
    public required int ExpectedBatchSize { get; init; }

    /// <summary>z: the noise standard deviation is z · C on every coordinate of the summed clipped gradients.</summary>
    public required double NoiseMultiplier { get; init; }

    /// <summary>C: every example's gradient over all trainable LoRA tensors jointly is clipped to this L2 norm.</summary>
    public required double MaxGradNorm { get; init; }

    /// <summary>The delta at which the record-level epsilon is stated, in (0, 1).</summary>
    public required double Delta { get; init; }

    /// <summary>Where the sample and the noise come from: the operating system's generator unless a test seeds one.</summary>
    public IRandomSource Randomness { get; init; } = CryptoRandomSource.Instance;

    /// <summary>Most records one forward pass holds (a realised sample above it runs in several); 0 means the expected batch size.</summary>
    public int MicroBatchSize { get; init; }

    internal int EffectiveMicroBatchSize => MicroBatchSize > 0 ? MicroBatchSize : ExpectedBatchSize;

    /// <summary>Throws, naming the value and its allowed range, when a setting is unusable for <paramref name="recordCount"/> records.</summary>
    public void Validate(int recordCount)
    {
        ArgumentNullException.ThrowIfNull(Randomness);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ExpectedBatchSize, nameof(ExpectedBatchSize));
        ArgumentOutOfRangeException.ThrowIfNegative(MicroBatchSize, nameof(MicroBatchSize));
        if (!(NoiseMultiplier > 0) || !double.IsFinite(NoiseMultiplier))
        {
            throw new ArgumentOutOfRangeException(nameof(NoiseMultiplier), NoiseMultiplier, "the noise multiplier must be a positive finite number");
        }
        if (!(MaxGradNorm > 0) || !double.IsFinite(MaxGradNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(MaxGradNorm), MaxGradNorm, "the per-example clip norm must be a positive finite number");
        }
        if (!(Delta > 0 && Delta < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Delta), Delta, "delta must be in (0, 1)");
        }
        if (recordCount < ExpectedBatchSize)
        {
            throw new ArgumentOutOfRangeException(nameof(ExpectedBatchSize), ExpectedBatchSize,
                $"the expected batch of {ExpectedBatchSize} records exceeds the {recordCount} records there are (the sampling rate would be above 1)");
        }
    }
}
