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
    public sealed class Settings : LocalDataSettings
    {
        [CommandOption("--adapter <DIR>")]
        [Description("PEFT adapter folder to evaluate with; the base model alone when omitted.")]
        public string? Adapter { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model) || string.IsNullOrWhiteSpace(Data))
            {
                return ValidationResult.Error("--model and --data are required");
            }
            return ValidateShared();
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

        (JsonlDataset dataset, int padId) = LocalModelInputs.RequireDataset(settings, config, maxLength, cancellationToken);

        var device = LocalModelInputs.RequireDevice(settings.Device);
        // Evaluation keeps no activations for backward: no workload, so the memory check counts the weights only.
        using LlamaForCausalLM model = LocalModelInputs.RequireModel(modelDirectory, device, settings.LoadOptions(workload: null));
        if (settings.Adapter is not null)
        {
            LocalModelInputs.RequireAdapter(model, settings.Adapter);
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
}
