using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Trainer;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>Local-only LoRA fine-tune of a Hugging Face model on a JSONL file, writing a PEFT adapter folder.</summary>
internal sealed class TrainCommand : AsyncCommand<TrainCommand.Settings>
{
    public sealed class Settings : LocalDataSettings
    {
        [CommandOption("--out <DIR>")]
        [Description("Folder to write the PEFT adapter to (adapter_config.json, adapter_model.safetensors).")]
        public string? Out { get; init; }

        [CommandOption("--steps <N>")]
        [Description("Optimiser steps (default 100).")]
        public int Steps { get; init; } = 100;

        [CommandOption("--rank <R>")]
        [Description("LoRA rank r (default 8).")]
        public int Rank { get; init; } = 8;

        [CommandOption("--alpha <ALPHA>")]
        [Description("lora_alpha (default 2 x rank).")]
        public double? Alpha { get; init; }

        [CommandOption("--targets <LIST>")]
        [Description("Comma-separated projections to adapt, as PEFT names them; names the model's family lacks are skipped "
            + "(default: every linear projection: q/k/v/o_proj, gate/up/down_proj; qkv_proj, o_proj, gate_up_proj, down_proj on Phi-3).")]
        public string Targets { get; init; } = string.Join(',', LoraSettings.AllProjections);

        [CommandOption("--learning-rate <LR>")]
        [Description("AdamW peak learning rate (default 2e-4), warmup then cosine.")]
        public double LearningRate { get; init; } = 2e-4;

        [CommandOption("--seed <N>")]
        [Description("Seed for LoRA A, dropout and batch order (default 0).")]
        public long Seed { get; init; }

        [CommandOption("--freeze-a")]
        [Description("Freeze LoRA A and train only B (FFA-LoRA, the federated default).")]
        public bool FreezeA { get; init; }

        public string[] TargetList =>
            Targets.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Distinct().ToArray();

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model) || string.IsNullOrWhiteSpace(Data) || string.IsNullOrWhiteSpace(Out))
            {
                return ValidationResult.Error("--model, --data and --out are required");
            }
            if (Steps is < 1 or > 10_000_000)
            {
                return ValidationResult.Error($"--steps {Steps} is outside 1..10000000");
            }
            if (Rank is < 1 or > 4096)
            {
                return ValidationResult.Error($"--rank {Rank} is outside 1..4096");
            }
            if (Alpha is double alpha && !(alpha > 0 && double.IsFinite(alpha)))
            {
                return ValidationResult.Error($"--alpha {alpha} must be a positive number");
            }
            foreach (string target in TargetList)
            {
                if (!LoraSettings.AllProjections.Contains(target))
                {
                    return ValidationResult.Error(
                        $"--targets: '{target}' is not one of {string.Join(", ", LoraSettings.AllProjections)}");
                }
            }
            if (TargetList.Length == 0)
            {
                return ValidationResult.Error("--targets names no projection");
            }
            if (!(LearningRate > 0 && LearningRate < 1))
            {
                return ValidationResult.Error($"--learning-rate {LearningRate} is outside (0, 1)");
            }
            return ValidateShared();
        }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string modelDirectory = settings.Model!;
        string outDirectory = settings.Out!;
        LlamaConfig config = LocalModelInputs.RequireConfig(modelDirectory);
        int maxLength = LocalModelInputs.SequenceLength(settings.MaxLength, config);
        if (!settings.TargetList.Any(config.ProjectionNames.Contains))
        {
            throw new UsageException(
                $"--targets: a {config.ModelType} model has none of {settings.Targets}; its projections are {string.Join(",", config.ProjectionNames)}");
        }
        if (File.Exists(outDirectory))
        {
            throw new UsageException($"--out: {outDirectory} is a file, not a folder");
        }

        (JsonlDataset dataset, int padId) = LocalModelInputs.RequireDataset(settings, config, maxLength, cancellationToken);

        var device = LocalModelInputs.RequireDevice(settings.Device);
        var lora = new LoraSettings(
            Rank: settings.Rank,
            Alpha: settings.Alpha ?? 2.0 * settings.Rank,
            TargetModules: settings.TargetList,
            InitSeed: settings.Seed,
            FreezeA: settings.FreezeA);
        var workload = new TrainingWorkload(settings.BatchSize, maxLength, lora);
        using LlamaForCausalLM model = LocalModelInputs.RequireModel(modelDirectory, device, settings.LoadOptions(workload));
        model.AddLora(lora);
        // Examples are shuffled into batches once (seeded); the trainer then visits the batches in a seeded order per epoch.
        IReadOnlyList<TokenBatch> batches = TokenBatcher.Batches(dataset.Examples, settings.BatchSize, padId,
            shuffleSeed: unchecked((ulong)settings.Seed));
        var trainerOptions = new TrainerOptions
        {
            Steps = settings.Steps,
            LearningRate = settings.LearningRate,
            Seed = settings.Seed,
        };

        TrainingResult result = settings.Json
            ? Train(model, batches, trainerOptions, WriteJsonStep, cancellationToken)
            : await TrainWithProgressBarAsync(model, batches, trainerOptions, cancellationToken);

        // The model's settings list only the targets its family has, so target_modules names modules PEFT will find.
        PeftAdapter.Save(outDirectory, model.Lora!, result.After!, Path.GetFullPath(modelDirectory));

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                @event = "done",
                @out = outDirectory,
                steps = result.Steps,
                first_loss = result.FirstLoss,
                last_loss = result.LastLoss,
                tokens = result.Tokens,
                seconds = Math.Round(result.Elapsed.TotalSeconds, 3),
                examples = dataset.Examples.Count,
                skipped_lines = dataset.SkippedLines.Count,
                device = device.type.ToString().ToLowerInvariant(),
            }));
        }
        else
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"trained {result.Steps} steps on {dataset.Examples.Count} examples ({result.Tokens} tokens, {result.Elapsed.TotalSeconds:F1} s): loss {result.FirstLoss:F4} -> {result.LastLoss:F4}"));
            Console.WriteLine($"adapter written to {outDirectory}");
        }
        return CliRunner.Ok;
    }

    private static TrainingResult Train(LlamaForCausalLM model, IReadOnlyList<TokenBatch> batches, TrainerOptions options,
        Action<TrainingProgress> onStep, CancellationToken cancellationToken) =>
        new LoraTrainer().Train(model, batches, options, new InlineProgress<TrainingProgress>(onStep), cancellationToken);

    private static void WriteJsonStep(TrainingProgress p) =>
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            @event = "step",
            step = p.Step,
            total_steps = p.TotalSteps,
            loss = p.Loss,
            learning_rate = p.LearningRate,
            grad_norm = double.IsFinite(p.GradNorm) ? p.GradNorm : (double?)null,
            tokens = p.Tokens,
            tokens_per_second = Math.Round(p.TokensPerSecond, 1),
        }));

    private static async Task<TrainingResult> TrainWithProgressBarAsync(LlamaForCausalLM model, IReadOnlyList<TokenBatch> batches,
        TrainerOptions options, CancellationToken cancellationToken)
    {
        TrainingResult? result = null;
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .StartAsync(async progress =>
            {
                ProgressTask task = progress.AddTask("training", maxValue: options.Steps ?? 1);
                // TorchSharp work is synchronous; running it off the render thread keeps the bar live.
                result = await Task.Run(() => Train(model, batches, options, p =>
                {
                    task.MaxValue = p.TotalSteps;
                    task.Value = p.Step;
                    task.Description = string.Create(CultureInfo.InvariantCulture, $"training  loss {p.Loss:F4}");
                }, cancellationToken), cancellationToken);
            });
        return result!;
    }
}
