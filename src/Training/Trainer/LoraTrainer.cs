using System.Diagnostics;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Trainer;

/// <summary>Local training hyper-parameters. Steps counts optimiser steps; when null, Epochs passes over the batches are made.</summary>
public sealed record TrainerOptions
{
    public int? Steps { get; init; }
    public int Epochs { get; init; } = 1;
    public double LearningRate { get; init; } = 2e-4;
    public double WeightDecay { get; init; } = 0.0;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double AdamEpsilon { get; init; } = 1e-8;
    public int WarmupSteps { get; init; }
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Gradient-norm clipping threshold; 0 turns clipping off.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Seeds torch (dropout) and the batch order.</summary>
    public long Seed { get; init; }

    public bool ShuffleBatches { get; init; } = true;

    public void Validate()
    {
        if (Steps is { } s)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(s, nameof(Steps));
        }
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(Epochs, nameof(Epochs));
        if (!(LearningRate > 0) || !double.IsFinite(LearningRate))
        {
            throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "learning rate must be a positive finite number");
        }
        if (!(WeightDecay >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "weight decay must be >= 0");
        }
        if (!(Beta1 is >= 0 and < 1) || !(Beta2 is >= 0 and < 1) || !(AdamEpsilon > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(Beta1), "AdamW needs betas in [0, 1) and epsilon > 0");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(WarmupSteps, nameof(WarmupSteps));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(GradientAccumulationSteps, nameof(GradientAccumulationSteps));
        if (!(MaxGradNorm >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(MaxGradNorm), MaxGradNorm, "max grad norm must be >= 0 (0 = no clipping)");
        }
    }
}

/// <summary>One optimiser step's report for progress bars and logs.</summary>
public sealed record TrainingProgress(int Step, int TotalSteps, double Loss, double LearningRate, double GradNorm,
    long Tokens, double TokensPerSecond)
{
    /// <summary>Under DP-SGD, the record-level epsilon after this step (at <see cref="DpSgdOptions.Delta"/>); null otherwise.</summary>
    public double? RecordEpsilon { get; init; }
}

/// <summary>What a local training run did; Before/After are the adapter around the run (null in full fine-tuning).</summary>
public sealed record TrainingResult(
    AdapterTensors? Before,
    AdapterTensors? After,
    IReadOnlyList<string> TrainableAdapterNames,
    int Steps,
    double FirstLoss,
    double LastLoss,
    long Tokens,
    TimeSpan Elapsed)
{
    /// <summary>Under DP-SGD, the record-level epsilon of the adapter after every step (at the run's delta); null otherwise.</summary>
    public double? RecordEpsilon { get; init; }

    /// <summary>Under DP-SGD, the sampling rate the epsilon was charged at; null otherwise.</summary>
    public double? SamplingRate { get; init; }

    /// <summary>after − before over the trainable adapter tensors, flattened in ordinal name order (the federated update).</summary>
    public float[] FlatDelta()
    {
        if (Before is null || After is null)
        {
            throw new InvalidOperationException("no adapter was trained");
        }
        return After.Select(TrainableAdapterNames).Subtract(Before.Select(TrainableAdapterNames)).Flatten();
    }
}

/// <summary>Local fine-tuning with AdamW, linear warmup then cosine decay, gradient accumulation and norm clipping.</summary>
public sealed partial class LoraTrainer
{
    /// <summary>
    /// Trains every parameter of <paramref name="model"/> that requires a gradient (the LoRA tensors after AddLora,
    /// or everything after SetBaseTrainable(true)) on the batches, cycling through them as often as needed.
    /// Cancellation is checked between optimiser steps.
    /// </summary>
    public TrainingResult Train(LlamaForCausalLM model, IReadOnlyList<TokenBatch> batches, TrainerOptions options,
        IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (batches.Count == 0)
        {
            throw new ArgumentException("training needs at least one batch", nameof(batches));
        }
        var parameters = model.TrainableParameters().ToList();
        if (parameters.Count == 0)
        {
            throw new InvalidOperationException("the model has no trainable parameters; add a LoRA adapter or make the base trainable");
        }
        int accumulation = options.GradientAccumulationSteps;
        int totalSteps = options.Steps ?? Math.Max(1, (int)Math.Ceiling(batches.Count * (double)options.Epochs / accumulation));

        torch.manual_seed(options.Seed);
        AdapterTensors? before = model.Lora is null ? null : model.GetAdapter();
        var trainable = model.Lora is null ? [] : model.TrainableAdapterNames();

        using var optimizer = torch.optim.AdamW(parameters, options.LearningRate, options.Beta1, options.Beta2,
            options.AdamEpsilon, options.WeightDecay);
        var order = new BatchOrder(batches.Count, options.Seed, options.ShuffleBatches);
        model.train();
        var clock = Stopwatch.StartNew();
        double firstLoss = double.NaN, lastLoss = double.NaN;
        long totalTokens = 0;
        try
        {
            for (int step = 0; step < totalSteps; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long stepStart = Stopwatch.GetTimestamp();
                double lr = ScheduleLearningRate(optimizer, options, step, totalSteps);
                var micro = new TokenBatch[accumulation];
                for (int i = 0; i < accumulation; i++)
                {
                    micro[i] = batches[order.Next()];
                }
                var (loss, gradNorm, tokens) = Step(model, optimizer, parameters, micro, options.MaxGradNorm);
                totalTokens += tokens;
                if (step == 0)
                {
                    firstLoss = loss;
                }
                lastLoss = loss;
                double seconds = Stopwatch.GetElapsedTime(stepStart).TotalSeconds;
                progress?.Report(new TrainingProgress(step + 1, totalSteps, loss, lr, gradNorm, totalTokens,
                    seconds > 0 ? tokens / seconds : 0));
            }
        }
        finally
        {
            model.eval();
        }
        AdapterTensors? after = model.Lora is null ? null : model.GetAdapter();
        return new TrainingResult(before, after, trainable, totalSteps, firstLoss, lastLoss, totalTokens, clock.Elapsed);
    }

    /// <summary>Sets every parameter group to this step's learning rate (cosine with warmup) and returns it.</summary>
    private static double ScheduleLearningRate(torch.optim.Optimizer optimizer, TrainerOptions options, int step, int totalSteps)
    {
        double lr = options.LearningRate * CosineWithWarmup(step, options.WarmupSteps, totalSteps);
        foreach (var group in optimizer.ParamGroups)
        {
            group.LearningRate = lr;
        }
        return lr;
    }

    /// <summary>transformers' get_cosine_schedule_with_warmup multiplier: linear warmup, then half a cosine to 0.</summary>
    public static double CosineWithWarmup(int step, int warmupSteps, int totalSteps)
    {
        if (step < warmupSteps)
        {
            return (double)step / Math.Max(1, warmupSteps);
        }
        double progress = (double)(step - warmupSteps) / Math.Max(1, totalSteps - warmupSteps);
        return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * progress)));
    }

    /// <summary>One optimiser step over the micro-batches; the loss is the token mean over all of them.</summary>
    internal static (double Loss, double GradNorm, long Tokens) Step(LlamaForCausalLM model, OptimizerHelper optimizer,
        IReadOnlyList<Parameter> parameters, IReadOnlyList<TokenBatch> microBatches, double maxGradNorm)
    {
        using var scope = torch.NewDisposeScope();
        optimizer.zero_grad();
        // Sum over tokens divided by the window's token count makes accumulation exact, whatever the padding.
        long targetTokens = Math.Max(1, microBatches.Sum(b => (long)b.TargetTokens));
        long inputTokens = 0;
        double lossSum = 0;
        foreach (var batch in microBatches)
        {
            using var microScope = torch.NewDisposeScope();
            var (ids, labels, mask) = ToTensors(batch, model.Device);
            inputTokens += batch.AttentionMask.Sum();
            Tensor loss = model.SummedTokenLoss(ids, labels, mask);
            (loss / targetTokens).backward();
            lossSum += loss.item<float>();
        }
        double gradNorm = maxGradNorm > 0
            ? torch.nn.utils.clip_grad_norm_(parameters, maxGradNorm)
            : double.NaN;
        optimizer.step();
        return (lossSum / targetTokens, gradNorm, inputTokens);
    }

    internal static (Tensor Ids, Tensor Labels, Tensor Mask) ToTensors(TokenBatch batch, Device device)
    {
        long[] shape = [batch.BatchSize, batch.SequenceLength];
        long expected = (long)batch.BatchSize * batch.SequenceLength;
        if (batch.InputIds.Length != expected || batch.Labels.Length != expected || batch.AttentionMask.Length != expected)
        {
            throw new ArgumentException($"token batch arrays must each hold {batch.BatchSize} x {batch.SequenceLength} values", nameof(batch));
        }
        Tensor ids = torch.tensor(batch.InputIds, shape, ScalarType.Int64).to(device);
        Tensor labels = torch.tensor(batch.Labels, shape, ScalarType.Int64).to(device);
        Tensor mask = torch.tensor(batch.AttentionMask, shape, ScalarType.Int64).to(device);
        return (ids, labels, mask);
    }

    /// <summary>Visits batch indices epoch by epoch, each epoch in a seeded shuffled order.</summary>
    private sealed class BatchOrder(int count, long seed, bool shuffle)
    {
        private int[] _order = [];
        private int _position;
        private int _epoch;

        public int Next()
        {
            if (_position == _order.Length)
            {
                _order = Enumerable.Range(0, count).ToArray();
                if (shuffle)
                {
                    // HashCode.Combine is randomised per process; this mix is stable across runs and machines.
                    new Random(unchecked((int)(seed ^ (seed >> 32)) * 397 ^ _epoch)).Shuffle(_order);
                }
                _epoch++;
                _position = 0;
            }
            return _order[_position++];
        }
    }
}
