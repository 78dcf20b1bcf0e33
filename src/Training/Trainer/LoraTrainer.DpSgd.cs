using System.Diagnostics;
using Federated.Aggregation.Privacy;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Trainer;

// Record-level DP-SGD (Abadi et al. 2016, Algorithm 1) on the LoRA tensors: Poisson-sampled records, each example's
// gradient clipped to C, Gaussian noise of standard deviation z C on the sum, divided by the expected batch size.
public sealed partial class LoraTrainer
{
    /// <summary>
    /// Trains the model's LoRA tensors with DP-SGD on <paramref name="records"/> (one record, one example; not packed):
    /// every step samples each record with probability q = expected batch / n, clips each sampled example's gradient over
    /// all trainable LoRA tensors jointly to <see cref="DpSgdOptions.MaxGradNorm"/>, adds N(0, (z C)^2) to the sum and
    /// divides by the expected batch size before the AdamW step. The record-level epsilon covers the adapter (and what is
    /// computed from it); the per-step losses reported to <paramref name="progress"/> come from the raw sample and are not covered.
    /// </summary>
    public TrainingResult TrainPrivate(LlamaForCausalLM model, IReadOnlyList<TokenizedExample> records, int padId,
        TrainerOptions options, DpSgdOptions privacy, IProgress<TrainingProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(privacy);
        ArgumentOutOfRangeException.ThrowIfNegative(padId);
        options.Validate();
        privacy.Validate(records.Count);
        if (options.GradientAccumulationSteps != 1)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.GradientAccumulationSteps,
                "DP-SGD samples each step's records itself; gradient accumulation must be 1");
        }
        int totalSteps = options.Steps ?? Math.Max(1, (int)Math.Ceiling(options.Epochs * (double)records.Count / privacy.ExpectedBatchSize));

        torch.manual_seed(options.Seed);
        AdapterTensors before = model.GetAdapter();
        var trainable = model.TrainableAdapterNames();
        var random = new NoiseSampler(privacy.Randomness);
        var sampler = new PoissonSampler(records.Count, (double)privacy.ExpectedBatchSize / records.Count, random);
        // Charged at the sampler's exact inclusion probability, which is q rounded up.
        var accountant = new RecordLevelAccountant(sampler.Rate, privacy.NoiseMultiplier, privacy.Delta);

        using var capture = PerExampleCapture.Attach(model);
        using var optimizer = torch.optim.AdamW(capture.Parameters, options.LearningRate, options.Beta1, options.Beta2,
            options.AdamEpsilon, options.WeightDecay);
        model.train();
        var clock = Stopwatch.StartNew();
        double firstLoss = double.NaN, lastLoss = double.NaN, epsilon = 0;
        long totalTokens = 0;
        try
        {
            for (int step = 0; step < totalSteps; step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long stepStart = Stopwatch.GetTimestamp();
                double lr = ScheduleLearningRate(optimizer, options, step, totalSteps);
                var sample = sampler.Next().Select(i => records[i]).ToList();
                var (loss, tokens) = PrivateStep(model, optimizer, capture, sample, padId, privacy, random);
                totalTokens += tokens;
                if (step == 0)
                {
                    firstLoss = loss;
                }
                lastLoss = loss;
                epsilon = accountant.Epsilon(step + 1);
                double seconds = Stopwatch.GetElapsedTime(stepStart).TotalSeconds;
                progress?.Report(new TrainingProgress(step + 1, totalSteps, loss, lr, double.NaN, totalTokens,
                    seconds > 0 ? tokens / seconds : 0) { RecordEpsilon = epsilon });
            }
        }
        finally
        {
            model.eval();
        }
        return new TrainingResult(before, model.GetAdapter(), trainable, totalSteps, firstLoss, lastLoss, totalTokens, clock.Elapsed)
        {
            RecordEpsilon = epsilon,
            SamplingRate = sampler.Rate,
        };
    }

    /// <summary>One DP-SGD step over an already sampled batch (possibly empty); the loss is the token mean of the sample.</summary>
    internal static (double Loss, long Tokens) PrivateStep(LlamaForCausalLM model, OptimizerHelper optimizer, PerExampleCapture capture,
        IReadOnlyList<TokenizedExample> sample, int padId, DpSgdOptions privacy, NoiseSampler random)
    {
        using var scope = torch.NewDisposeScope();
        optimizer.zero_grad();
        Tensor[] sums = capture.Parameters.Select(p => torch.zeros_like(p)).ToArray();
        var (lossSum, targetTokens, inputTokens) = sample.Count == 0
            ? (0.0, 0L, 0L)
            : AccumulateClipped(model, capture, sample, padId, privacy.MaxGradNorm, privacy.EffectiveMicroBatchSize, sums);
        NoisyMean(sums, privacy, random);
        using (torch.no_grad())
        {
            for (int k = 0; k < sums.Length; k++)
            {
                Parameter p = capture.Parameters[k];
                if (p.grad is { } grad)
                {
                    grad.copy_(sums[k]);
                }
                else
                {
                    p.grad = sums[k].MoveToOuterDisposeScope();
                }
            }
        }
        optimizer.step();
        return (targetTokens > 0 ? lossSum / targetTokens : double.NaN, inputTokens);
    }

    /// <summary>How far below C a clipped contribution is aimed (relative), to absorb float32 rounding.</summary>
    internal const double ClipMargin = 1e-6;

    /// <summary>
    /// Adds every sampled example's clipped gradient into <paramref name="sums"/> (one per capture parameter). An example's
    /// gradient is that of its mean token loss (its summed loss times <paramref name="exampleWeights"/>, by default 1 / its
    /// target tokens), clipped over all trainable LoRA tensors jointly: g_i min(1, C (1 - 1e-6) / (||g_i|| + 1e-6)), Opacus's factor
    /// (opacus/optimizers/optimizer.py, clip_and_accumulate) with a margin for float32 rounding.
    /// </summary>
    internal static (double LossSum, long TargetTokens, long InputTokens) AccumulateClipped(LlamaForCausalLM model,
        PerExampleCapture capture, IReadOnlyList<TokenizedExample> examples, int padId, double clipNorm, int microBatchSize,
        Tensor[] sums, double[]? exampleWeights = null)
    {
        double lossSum = 0;
        long targetTokens = 0, inputTokens = 0;
        for (int start = 0; start < examples.Count; start += microBatchSize)
        {
            using var scope = torch.NewDisposeScope();
            int count = Math.Min(microBatchSize, examples.Count - start);
            var chunk = new TokenizedExample[count];
            var weights = new float[count];
            for (int i = 0; i < count; i++)
            {
                chunk[i] = examples[start + i];
                int targets = chunk[i].Labels.Count(l => l != TokenizedExample.IgnoreIndex);
                targetTokens += targets;
                inputTokens += chunk[i].InputIds.Length;
                weights[i] = exampleWeights is not null ? (float)exampleWeights[start + i] : targets > 0 ? 1f / targets : 0f;
            }
            TokenBatch batch = TokenBatcher.Collate(chunk, padId);
            var (ids, labels, mask) = ToTensors(batch, model.Device);
            Tensor[] perExample;
            capture.SetKeepMask(mask.to_type(ScalarType.Float32));
            try
            {
                Tensor loss = model.SummedTokenLoss(ids, labels, mask);
                loss.backward();
                lossSum += loss.item<float>();
                perExample = capture.Take();
            }
            finally
            {
                capture.SetKeepMask(null);
            }
            using (torch.no_grad())
            {
                // Norms and factors in float64; the factor is one part in 10^6 below Opacus's so that the float32
                // rounding of the factor and of factor x g (parts in 10^8) cannot take a contribution above C (a run
                // once measured 0.50000000421 for C = 0.5 with float32 norms and Opacus's factor alone).
                Tensor w = torch.tensor(weights, device: model.Device).to_type(ScalarType.Float64);
                Tensor squared = torch.zeros([count], ScalarType.Float64, model.Device);
                foreach (Tensor g in perExample)
                {
                    squared.add_(g.reshape(count, -1).square().sum(1, false, ScalarType.Float64));
                }
                Tensor norms = squared.sqrt().mul_(w);
                Tensor factors = w.mul(norms.add(1e-6).reciprocal().mul_(clipNorm * (1 - ClipMargin)).clamp_max_(1.0)).to_type(ScalarType.Float32);
                for (int k = 0; k < sums.Length; k++)
                {
                    sums[k].add_(factors.matmul(perExample[k].reshape(count, -1)).reshape(sums[k].shape));
                }
            }
        }
        return (lossSum, targetTokens, inputTokens);
    }

    /// <summary>sums ← (sums + N(0, (z C)^2 I)) / expected batch size, in place (Abadi et al. 2016, Algorithm 1, "add noise").</summary>
    internal static void NoisyMean(Tensor[] sums, DpSgdOptions privacy, NoiseSampler random)
    {
        double sigma = privacy.NoiseMultiplier * privacy.MaxGradNorm;
        using var noGrad = torch.no_grad();
        foreach (Tensor sum in sums)
        {
            var noise = new float[sum.numel()];
            GaussianNoise.Fill(noise, sigma, random);
            using Tensor draws = torch.tensor(noise, sum.shape, ScalarType.Float32);
            using Tensor onDevice = draws.to(sum.device);
            sum.add_(onDevice).div_(privacy.ExpectedBatchSize);
        }
    }
}

/// <summary>Per-example gradient sinks on every LoRA layer of a model, and the trainable LoRA tensors in one fixed order.</summary>
internal sealed class PerExampleCapture : IDisposable
{
    private readonly List<(LoraLinear Linear, PerExampleGradientSink Sink)> _layers = [];
    private readonly List<Parameter> _parameters = [];
    private readonly List<string> _names = [];

    private PerExampleCapture()
    {
    }

    /// <summary>Layer by layer: lora_A (when it trains), then lora_B.</summary>
    public IReadOnlyList<Parameter> Parameters => _parameters;

    /// <summary>PEFT names of <see cref="Parameters"/>.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Attaches sinks; throws unless the model's trainable tensors are exactly LoRA tensors.</summary>
    public static PerExampleCapture Attach(LlamaForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Lora is null)
        {
            throw new InvalidOperationException("DP-SGD trains a LoRA adapter; call AddLora first");
        }
        if (model.BaseWeights().Any(w => w.Tensor.requires_grad))
        {
            // Per-example gradients are computed for LoRA tensors only; a trainable base weight would go unclipped.
            throw new InvalidOperationException("DP-SGD clips per-example gradients of LoRA tensors only; the base model has trainable weights");
        }
        var capture = new PerExampleCapture();
        foreach (var (path, linear) in model.AllLinears())
        {
            if (linear.LoraA is not { } a || linear.LoraB is not { } b)
            {
                continue;
            }
            var sink = new PerExampleGradientSink();
            linear.PerExampleGradients = sink;
            capture._layers.Add((linear, sink));
            if (a.requires_grad)
            {
                capture._parameters.Add(a);
                capture._names.Add($"base_model.model.{path}.lora_A.weight");
            }
            capture._parameters.Add(b);
            capture._names.Add($"base_model.model.{path}.lora_B.weight");
        }
        long listed = capture._parameters.Sum(p => p.numel());
        if (listed != model.TrainableParameterCount())
        {
            capture.Dispose();
            throw new InvalidOperationException($"the model trains {model.TrainableParameterCount()} values but its LoRA tensors hold {listed}; DP-SGD would leave some unclipped");
        }
        return capture;
    }

    public void SetKeepMask(Tensor? mask)
    {
        foreach (var (_, sink) in _layers)
        {
            sink.KeepMask = mask;
        }
    }

    /// <summary>Each parameter's per-example gradients [B, ..shape] from the last backward, in the current dispose scope; the sinks are emptied.</summary>
    public Tensor[] Take()
    {
        var taken = new List<Tensor>(_parameters.Count);
        foreach (var (linear, sink) in _layers)
        {
            if (sink.GradB is null)
            {
                throw new InvalidOperationException($"no backward reached the LoRA layer {linear.GetName()}");
            }
            if (linear.LoraA!.requires_grad)
            {
                taken.Add(sink.GradA!.alias());
            }
            taken.Add(sink.GradB.alias());
            sink.Clear();
        }
        return [.. taken];
    }

    public void Dispose()
    {
        foreach (var (linear, sink) in _layers)
        {
            linear.PerExampleGradients = null;
            sink.Dispose();
        }
        _layers.Clear();
    }
}
