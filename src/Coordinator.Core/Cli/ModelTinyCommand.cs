using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>`coordinator model tiny`: writes a random tiny Llama with a byte-level tokenizer, to try a federation without a download.</summary>
internal sealed class ModelTinyCommand : Command<ModelTinyCommand.Settings>
{
    // The simulation's initialisation: transformers' default std of 0.02 caps a 64-wide model's logits near +-1.3 behind
    // the final RMSNorm, so no adapter could make any character likely; 0.1 lets an adapter learn.
    private const double InitStd = 0.1;

    public sealed class Settings : CommandSettings
    {
        [CommandOption("--out <DIR>")]
        [Description("Folder to write config.json, model.safetensors and the tokenizer files into (new or empty).")]
        public string? Out { get; init; }

        [CommandOption("--layers <N>")]
        [Description("Decoder layers, 1..32.")]
        [DefaultValue(2)]
        public int Layers { get; init; } = 2;

        [CommandOption("--hidden <N>")]
        [Description("Hidden size, a multiple of 8 in 16..2048; 4 attention heads over 2 key/value heads.")]
        [DefaultValue(64)]
        public int Hidden { get; init; } = 64;

        [CommandOption("--seed <N>")]
        [Description("Seed of the random weights: the same seed writes the same model.")]
        [DefaultValue(1L)]
        public long Seed { get; init; } = 1;

        [CommandOption("--json")]
        [Description("Print one JSON object instead of text.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(settings.Out))
        {
            throw new UsageException("--out DIR is required");
        }
        if (settings.Layers is < 1 or > 32)
        {
            throw new UsageException($"--layers must be in 1..32, got {settings.Layers}");
        }
        if (settings.Hidden is < 16 or > 2048 || settings.Hidden % 8 != 0)
        {
            throw new UsageException($"--hidden must be a multiple of 8 in 16..2048, got {settings.Hidden}");
        }
        string directory = Path.GetFullPath(settings.Out);
        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
        {
            throw new UsageException($"--out: '{directory}' is not empty; choose a new or empty folder");
        }
        Directory.CreateDirectory(directory);
        int vocab = ByteLevelTokenizerWriter.Write(directory);
        LlamaConfig config = TinyLlamaFactory.DefaultConfig(vocabSize: vocab) with
        {
            NumHiddenLayers = settings.Layers,
            HiddenSize = settings.Hidden,
            IntermediateSize = 2 * settings.Hidden,
            // Four heads of an even width (rotary embeddings pair dimensions).
            HeadDim = settings.Hidden / 4,
        };
        TinyLlamaFactory.Write(directory, config, settings.Seed, initStd: InitStd);
        long bytes = new FileInfo(Path.Combine(directory, "model.safetensors")).Length;
        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new { model = directory, layers = settings.Layers, hidden = settings.Hidden, vocab_size = vocab, seed = settings.Seed, weights_bytes = bytes }));
        }
        else
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote a random tiny Llama ({settings.Layers} layers, hidden {settings.Hidden}, byte-level tokenizer of {vocab} tokens, {bytes / 1024.0:F0} KiB of weights) to {directory}"));
        }
        return CliRunner.Ok;
    }
}
