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
        [Description("Optimiser steps (default: 100).")]
        public int Steps { get; init; } = 100;

        [CommandOption("--rank <R>")]
        [Description("LoRA rank r (default: 8).")]
        public int Rank { get; init; } = 8;

        [CommandOption("--alpha <ALPHA>")]
        [Description("lora_alpha (default: 2 x rank).")]
        public double? Alpha { get; init; }

        [CommandOption("--targets <LIST>")]
        [Description("Comma-separated projections to adapt, as PEFT names them; names the model's family lacks are skipped "
            + "(default: every linear projection, q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,qkv_proj,gate_up_proj: "
            + "q/k/v/o_proj and gate/up/down_proj on Llama, qkv_proj, o_proj, gate_up_proj and down_proj on Phi-3).")]
        public string Targets { get; init; } = string.Join(',', LoraSettings.AllProjections);

        [CommandOption("--learning-rate <LR>")]
        [Description("AdamW peak learning rate, warmup then cosine (default: 0.0002).")]
        public double LearningRate { get; init; } = 2e-4;

        [CommandOption("--seed <N>")]
        [Description("Seed for LoRA A, dropout and batch order (default: 0).")]
        public long Seed { get; init; }

        [CommandOption("--freeze-a")]
        [Description("Freeze LoRA A and train only B (FFA-LoRA, the federated default).")]
        public bool FreezeA { get; init; }

        [CommandOption("--privacy-unit <UNIT>")]
        [Description("none or record: DP-SGD with Poisson sampling at rate --batch-size / records, per-record clipping "
            + "to --max-grad-norm and Gaussian noise; prints the record-level epsilon at --delta (default: none).")]
        public string PrivacyUnit { get; init; } = "none";

        [CommandOption("--noise-multiplier <Z>")]
        [Description("DP-SGD noise: standard deviation Z x --max-grad-norm on the summed clipped gradients (with --privacy-unit record).")]
        public double? NoiseMultiplier { get; init; }

        [CommandOption("--max-grad-norm <C>")]
        [Description("DP-SGD per-record L2 clip norm C over all trainable LoRA tensors (with --privacy-unit record).")]
        public double? MaxGradNorm { get; init; }

        [CommandOption("--delta <D>")]
        [Description("The delta in (0, 1) the record-level epsilon is stated at (with --privacy-unit record).")]
        public double? Delta { get; init; }

        public bool RecordLevel => PrivacyUnit == "record";

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
            return ValidatePrivacy() is { Successful: false } privacy ? privacy : ValidateShared();
        }

        private ValidationResult ValidatePrivacy()
        {
            if (PrivacyUnit is not ("none" or "record"))
            {
                return ValidationResult.Error($"--privacy-unit '{PrivacyUnit}' is not one of none, record");
            }
            if (!RecordLevel)
            {
                string? stray = NoiseMultiplier is not null ? "--noise-multiplier" : MaxGradNorm is not null ? "--max-grad-norm"
                    : Delta is not null ? "--delta" : null;
                return stray is null
                    ? ValidationResult.Success()
                    : ValidationResult.Error($"{stray} applies only with --privacy-unit record");
            }
            if (NoiseMultiplier is not { } z)
            {
                return ValidationResult.Error("--privacy-unit record needs --noise-multiplier");
            }
            if (MaxGradNorm is not { } c)
            {
                return ValidationResult.Error("--privacy-unit record needs --max-grad-norm");
            }
            if (Delta is not { } delta)
            {
                return ValidationResult.Error("--privacy-unit record needs --delta");
            }
            if (!(z > 0) || !double.IsFinite(z))
            {
                return ValidationResult.Error($"--noise-multiplier {z} must be a positive finite number");
            }
            if (!(c > 0) || !double.IsFinite(c))
            {
                return ValidationResult.Error($"--max-grad-norm {c} must be a positive finite number");
            }
            if (!(delta > 0 && delta < 1))
            {
                return ValidationResult.Error($"--delta {delta} is outside (0, 1)");
            }
            if (Pack)
            {
                // A packed block mixes several records and a record may span two blocks: one record would touch several examples.
                return ValidationResult.Error("--pack cannot be used with --privacy-unit record: DP-SGD clips one record per example");
            }
            return ValidationResult.Success();
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

        DpSgdOptions? privacy = null;
        if (settings.RecordLevel)
        {
            if (dataset.Examples.Count < settings.BatchSize)
            {
                throw new UsageException(
                    $"--batch-size {settings.BatchSize} is the expected DP-SGD batch; --data has only {dataset.Examples.Count} records (q = batch / records must be at most 1)");
            }
            privacy = new DpSgdOptions
            {
                ExpectedBatchSize = settings.BatchSize,
                NoiseMultiplier = settings.NoiseMultiplier!.Value,
                MaxGradNorm = settings.MaxGradNorm!.Value,
                Delta = settings.Delta!.Value,
            };
        }
        var run = new TrainingRun(model, batches, dataset.Examples, padId, trainerOptions, privacy);

        TrainingResult result = settings.Json
            ? Train(run, WriteJsonStep, cancellationToken)
            : await TrainWithProgressBarAsync(run, cancellationToken);

        // The model's settings list only the targets its family has, so target_modules names modules PEFT will find.
        PeftAdapter.Save(outDirectory, model.Lora!, result.After!, Path.GetFullPath(modelDirectory));

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                @event = "done",
                @out = outDirectory,
                steps = result.Steps,
                first_loss = Finite(result.FirstLoss),
                last_loss = Finite(result.LastLoss),
                tokens = result.Tokens,
                seconds = Math.Round(result.Elapsed.TotalSeconds, 3),
                examples = dataset.Examples.Count,
                skipped_lines = dataset.SkippedLines.Count,
                device = device.type.ToString().ToLowerInvariant(),
                privacy_unit = settings.RecordLevel ? "record" : "none",
                record_epsilon = result.RecordEpsilon,
                delta = privacy?.Delta,
                adjacency = privacy is null ? null : "add-remove",
                sampling_rate = result.SamplingRate,
                noise_multiplier = privacy?.NoiseMultiplier,
                max_grad_norm = privacy?.MaxGradNorm,
            }));
        }
        else
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"trained {result.Steps} steps on {dataset.Examples.Count} examples ({result.Tokens} tokens, {result.Elapsed.TotalSeconds:F1} s): loss {result.FirstLoss:F4} -> {result.LastLoss:F4}"));
            if (privacy is not null)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"record_epsilon {result.RecordEpsilon:F4} at delta {privacy.Delta:G4} (one record added or removed; q {result.SamplingRate:G4}, noise multiplier {privacy.NoiseMultiplier:G4}, clip {privacy.MaxGradNorm:G4}); it covers the adapter, not the printed losses"));
            }
            Console.WriteLine($"adapter written to {outDirectory}");
        }
        return CliRunner.Ok;
    }

    /// <summary>What one train command runs: plain LoRA over the batches, or DP-SGD over the records when Privacy is set.</summary>
    private sealed record TrainingRun(LlamaForCausalLM Model, IReadOnlyList<TokenBatch> Batches, IReadOnlyList<TokenizedExample> Records,
        int PadId, TrainerOptions Options, DpSgdOptions? Privacy);

    private static TrainingResult Train(TrainingRun run, Action<TrainingProgress> onStep, CancellationToken cancellationToken)
    {
        var progress = new InlineProgress<TrainingProgress>(onStep);
        return run.Privacy is null
            ? new LoraTrainer().Train(run.Model, run.Batches, run.Options, progress, cancellationToken)
            : new LoraTrainer().TrainPrivate(run.Model, run.Records, run.PadId, run.Options, run.Privacy, progress, cancellationToken);
    }

    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

    private static void WriteJsonStep(TrainingProgress p) =>
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            @event = "step",
            step = p.Step,
            total_steps = p.TotalSteps,
            // A DP-SGD step whose Poisson sample came out empty has no loss (JSON has no NaN).
            loss = Finite(p.Loss),
            learning_rate = p.LearningRate,
            grad_norm = double.IsFinite(p.GradNorm) ? p.GradNorm : (double?)null,
            tokens = p.Tokens,
            tokens_per_second = Math.Round(p.TokensPerSecond, 1),
            record_epsilon = p.RecordEpsilon,
        }, s_stepJson));

    // Steps of a non-private run keep their old shape: record_epsilon appears only when there is one.
    private static readonly JsonSerializerOptions s_stepJson = new()
    {
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    private static async Task<TrainingResult> TrainWithProgressBarAsync(TrainingRun run, CancellationToken cancellationToken)
    {
        TrainingResult? result = null;
        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .StartAsync(async progress =>
            {
                ProgressTask task = progress.AddTask("training", maxValue: run.Options.Steps ?? 1);
                // TorchSharp work is synchronous; running it off the render thread keeps the bar live.
                result = await Task.Run(() => Train(run, p =>
                {
                    task.MaxValue = p.TotalSteps;
                    task.Value = p.Step;
                    task.Description = p.RecordEpsilon is { } epsilon
                        ? string.Create(CultureInfo.InvariantCulture, $"training  loss {p.Loss:F4}  record_epsilon {epsilon:F3}")
                        : string.Create(CultureInfo.InvariantCulture, $"training  loss {p.Loss:F4}");
                }, cancellationToken), cancellationToken);
            });
        return result!;
    }
}
