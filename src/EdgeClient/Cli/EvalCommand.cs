using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>Mean token cross-entropy and perplexity of a model, with or without a PEFT adapter, on a JSONL file.</summary>
internal sealed class EvalCommand : AsyncCommand<EvalCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Hugging Face model folder: config.json, model.safetensors (or sharded), tokenizer.json.")]
        public string? Model { get; init; }

        [CommandOption("--adapter <DIR>")]
        [Description("PEFT adapter folder to evaluate with; the base model alone when omitted.")]
        public string? Adapter { get; init; }

        [CommandOption("--data <FILE>")]
        [Description("JSONL evaluation data (same formats as train).")]
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
        [Description("Print {\"mean_loss\", \"perplexity\", \"tokens\"} as JSON.")]
        public bool Json { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model) || string.IsNullOrWhiteSpace(Data))
            {
                return ValidationResult.Error("--model and --data are required");
            }
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

    public override Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string modelDirectory = settings.Model!;
        LlamaConfig config = LocalModelInputs.RequireConfig(modelDirectory);
        int maxLength = LocalModelInputs.SequenceLength(settings.MaxLength, config);
        if (settings.Adapter is string adapterDirectory && !Directory.Exists(adapterDirectory))
        {
            throw new UsageException($"--adapter: folder not found: {adapterDirectory}");
        }

        JsonlDataset dataset;
        int padId;
        using (HuggingFaceTokenizer tokenizer = LocalModelInputs.RequireTokenizer(modelDirectory, config))
        {
            var options = new DatasetOptions
            {
                MaxLength = maxLength,
                Pack = settings.Pack,
                MalformedLines = settings.SkipMalformed ? MalformedLinePolicy.Skip : MalformedLinePolicy.Stop,
            };
            dataset = LocalModelInputs.RequireData(settings.Data!, tokenizer, options, cancellationToken);
            padId = tokenizer.PadId;
        }
        foreach (MalformedLine skipped in dataset.SkippedLines)
        {
            Console.Error.WriteLine($"edge-client: skipped {skipped}");
        }

        var device = LocalModelInputs.RequireDevice(settings.Device);
        using LlamaForCausalLM model = LocalModelInputs.RequireModel(modelDirectory, device);
        if (settings.Adapter is not null)
        {
            LoadAdapter(model, settings.Adapter);
        }

        IReadOnlyList<TokenBatch> batches = TokenBatcher.Batches(dataset.Examples, settings.BatchSize, padId);
        EvaluationResult result = ModelEvaluator.Evaluate(model, batches, cancellationToken);
        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                mean_loss = result.MeanLoss,
                perplexity = result.Perplexity,
                tokens = result.Tokens,
            }));
        }
        else
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"mean_loss   {result.MeanLoss:F6}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"perplexity  {result.Perplexity:F4}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"tokens      {result.Tokens}"));
        }
        return Task.FromResult(CliRunner.Ok);
    }

    private static void LoadAdapter(LlamaForCausalLM model, string adapterDirectory)
    {
        try
        {
            PeftAdapter.Apply(adapterDirectory, model);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or JsonException)
        {
            throw new UsageException($"--adapter: {ex.Message}");
        }
    }
}
