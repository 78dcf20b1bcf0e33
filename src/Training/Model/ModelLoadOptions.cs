using Federated.Training.Lora;
using Federated.Training.Precision;

namespace Federated.Training.Model;

/// <summary>The batch a model is loaded to train on, for the memory estimate made before any weight is read.</summary>
/// <param name="BatchSize">Sequences per optimiser micro-batch.</param>
/// <param name="SequenceLength">Tokens per sequence.</param>
/// <param name="Lora">The adapter that will be attached (its parameters, gradients and AdamW state are counted).</param>
public sealed record TrainingWorkload(int BatchSize, int SequenceLength, LoraSettings? Lora)
{
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(BatchSize, nameof(BatchSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(SequenceLength, 1, nameof(SequenceLength));
        Lora?.Validate();
    }
}

/// <summary>How <see cref="LlamaForCausalLM.FromPretrained(string, TorchSharp.torch.Device?, ModelLoadOptions)"/> holds and runs a model.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Parameters above which activation checkpointing is on unless set explicitly.</summary>
    public const long CheckpointByDefaultAbove = 1_000_000_000;

    /// <summary>The exact reference configuration: float32 matmuls, unquantized, no memory check.</summary>
    public static ModelLoadOptions Float32 { get; } = new() { Precision = ModelPrecision.Fp32, MemoryLimitBytes = 0 };

    public ModelPrecision Precision { get; init; } = ModelPrecision.Auto;

    public BaseQuantization Quantization { get; init; } = BaseQuantization.None;

    /// <summary>Recompute each decoder layer in backward; null decides by <see cref="ModelMemoryEstimate.CheckpointByDefault"/>.</summary>
    public bool? CheckpointActivations { get; init; }

    /// <summary>Tokens per chunk of the LM head and cross-entropy; 0 sizes chunks to about 64 MiB of float32 logits.</summary>
    public int LossChunkTokens { get; init; }

    /// <summary>The device's capabilities; null detects them (tests pass their own).</summary>
    public DeviceCapabilities? Capabilities { get; init; }

    /// <summary>The training batch to include in the memory estimate; null counts weights only.</summary>
    public TrainingWorkload? Workload { get; init; }

    /// <summary>Memory the estimate must fit in: null asks the OS for the available memory, 0 skips the check.</summary>
    public long? MemoryLimitBytes { get; init; }

    public void Validate()
    {
        if (!Enum.IsDefined(Precision))
        {
            throw new ArgumentOutOfRangeException(nameof(Precision), Precision, "precision must be auto, fp32, bf16 or fp16");
        }
        if (!Enum.IsDefined(Quantization))
        {
            throw new ArgumentOutOfRangeException(nameof(Quantization), Quantization, "quantize must be none, int8 or nf4");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(LossChunkTokens, nameof(LossChunkTokens));
        if (MemoryLimitBytes is < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MemoryLimitBytes), MemoryLimitBytes, "the memory limit must be >= 0 (0 = no check)");
        }
        Workload?.Validate();
    }
}
