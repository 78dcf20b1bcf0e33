using System.ComponentModel;
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
    [Description("auto, cpu or cuda (default auto: CUDA when available).")]
    public string Device { get; init; } = "auto";

    [CommandOption("--batch-size <N>")]
    [Description("Sequences per batch (default 4).")]
    public int BatchSize { get; init; } = 4;

    [CommandOption("--max-length <N>")]
    [Description("Sequence length: truncate, or block size with --pack (default min(512, max_position_embeddings)).")]
    public int? MaxLength { get; init; }

    [CommandOption("--pack")]
    [Description("Pack records into full --max-length blocks instead of padding each.")]
    public bool Pack { get; init; }

    [CommandOption("--skip-malformed")]
    [Description("Skip malformed JSONL lines (each reported) instead of stopping at the first.")]
    public bool SkipMalformed { get; init; }

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
        return ValidationResult.Success();
    }
}
