using System.ComponentModel;
using Federated.Training.Model;
using Federated.Training.Precision;
using Federated.Training.Trainer;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>The model, data and batching flags `train` and `eval` share, with one description and one range check each.</summary>
internal abstract class LocalDataSettings : CommandSettings
{
    [CommandOption("--model <DIR>")]
    [Description("Hugging Face model folder: config.json, model.safetensors (or sharded), tokenizer.json.")]
    public string? Model { get; init; }

    [CommandOption("--data <FILE>")]
    [Description("JSONL data: text, prompt/completion, messages or input_ids records.")]
    public string? Data { get; init; }

    [CommandOption("--device <D>")]
    [Description("auto, cpu or cuda (default: auto, CUDA when available).")]
    public string Device { get; init; } = "auto";

    [CommandOption("--batch-size <N>")]
    [Description("Sequences per batch (default: 4).")]
    public int BatchSize { get; init; } = 4;

    [CommandOption("--max-length <N>")]
    [Description("Sequence length: truncate, or block size with --pack (default: min(512, max_position_embeddings)).")]
    public int? MaxLength { get; init; }

    [CommandOption("--pack")]
    [Description("Pack records into full --max-length blocks instead of padding each.")]
    public bool Pack { get; init; }

    [CommandOption("--skip-malformed")]
    [Description("Skip malformed JSONL lines (each reported) instead of stopping at the first.")]
    public bool SkipMalformed { get; init; }

    [CommandOption("--precision <P>")]
    [Description("Matmul precision against the frozen weights: auto (bf16 where the device has native bf16 matmul, else fp32), fp32, bf16 or fp16 (default: auto).")]
    public string Precision { get; init; } = "auto";

    [CommandOption("--quantize <Q>")]
    [Description("Frozen base weights as none, int8 (per-channel absmax) or nf4 (QLoRA's 4-bit NormalFloat) (default: none).")]
    public string Quantize { get; init; } = "none";

    [CommandOption("--checkpoint-activations")]
    [Description("Recompute each decoder layer in backward (less memory, about a third more compute) (default: on when the kept activations would outweigh the weights).")]
    public bool CheckpointActivations { get; init; }

    [CommandOption("--no-checkpoint-activations")]
    [Description("Keep every layer's activations for backward.")]
    public bool NoCheckpointActivations { get; init; }

    [CommandOption("--json")]
    [Description("Print machine-readable JSON instead of text.")]
    public bool Json { get; init; }

    /// <summary>The checks of the shared flags; a command runs its own first, then these.</summary>
    protected ValidationResult ValidateShared()
    {
        if (BatchSize is < 1 or > 4096)
        {
            return ValidationResult.Error($"--batch-size {BatchSize} is outside 1..4096");
        }
        if (!TrainingDevice.Choices.Contains(Device.ToLowerInvariant()))
        {
            return ValidationResult.Error($"--device '{Device}' is not one of {string.Join(", ", TrainingDevice.Choices)}");
        }
        if (!PrecisionChoices.PrecisionNames.Contains(Precision.ToLowerInvariant()))
        {
            return ValidationResult.Error($"--precision '{Precision}' is not one of {string.Join(", ", PrecisionChoices.PrecisionNames)}");
        }
        if (!PrecisionChoices.QuantizationNames.Contains(Quantize.ToLowerInvariant()))
        {
            return ValidationResult.Error($"--quantize '{Quantize}' is not one of {string.Join(", ", PrecisionChoices.QuantizationNames)}");
        }
        if (CheckpointActivations && NoCheckpointActivations)
        {
            return ValidationResult.Error("--checkpoint-activations and --no-checkpoint-activations exclude each other");
        }
        return ValidationResult.Success();
    }

    /// <summary>How to hold and run the model; <paramref name="workload"/> (null for evaluation) sizes the memory check.</summary>
    public ModelLoadOptions LoadOptions(TrainingWorkload? workload) => new()
    {
        Precision = PrecisionChoices.ParsePrecision(Precision),
        Quantization = PrecisionChoices.ParseQuantization(Quantize),
        CheckpointActivations = CheckpointActivations ? true : NoCheckpointActivations ? false : null,
        Workload = workload,
    };
}
