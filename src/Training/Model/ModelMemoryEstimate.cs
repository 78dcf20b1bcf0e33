using System.Globalization;
using Federated.Training.Precision;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>Memory a model needs before it is loaded: weights in their storage form, adapter state, activations, runtime.</summary>
public sealed record ModelMemoryEstimate(long Parameters, long WeightBytes, long AdapterBytes, long ActivationBytes, long RuntimeBytes)
{
    // Measured: the .NET runtime with libtorch loaded and a step's allocator slack, on the 2-core build machine.
    private const long RuntimeOverhead = 400L * 1024 * 1024;

    public long TotalBytes => WeightBytes + AdapterBytes + ActivationBytes + RuntimeBytes;

    /// <summary>Values in the embedding, every decoder layer, the final norm and an untied head.</summary>
    public static long ParameterCount(LlamaConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        long h = config.HiddenSize, q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        // Two norms per layer (four on Gemma 2), plus Qwen3's per-head q_norm and k_norm.
        long norms = (config.IsGemma2 ? 4 : 2) * h + (config.HasQkNorm ? 2L * config.HeadDim : 0);
        long layer = Projections(config).Sum(p => p.In * p.Out) + norms
            + (config.QkvBias ? q + 2 * kv : 0) + (config.OutputBias ? h : 0) + (config.MlpBias ? 2L * config.IntermediateSize + h : 0);
        long embed = (long)config.VocabSize * h;
        return embed + config.NumHiddenLayers * layer + h + (config.TieWordEmbeddings ? 0 : embed);
    }

    /// <summary>Estimates the peak for loading (workload null) or for training on <paramref name="workload"/>.</summary>
    public static ModelMemoryEstimate Estimate(LlamaConfig config, WeightStorage storage, TrainingWorkload? workload, bool checkpoint,
        int lossChunkTokens = 0)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(storage);
        long parameters = ParameterCount(config);
        long dense = ElementSize(storage.WeightType);
        long h = config.HiddenSize, v = config.VocabSize;
        var projections = Projections(config).ToList();
        long projectionValues = projections.Sum(p => p.In * p.Out);
        long projectionBytes = storage.Quantization switch
        {
            BaseQuantization.Int8 => projectionValues + projections.Sum(p => p.Out) * 4,
            // 4 bits per value, an 8-bit scale per 64 values, a float32 per 256 scales (QLoRA §3, double quantization).
            BaseQuantization.Nf4 => projectionValues / 2 + projectionValues / Nf4Weight.BlockSize
                + projectionValues / (Nf4Weight.BlockSize * Nf4Weight.ScaleBlockSize) * 4,
            _ => projectionValues * dense,
        };
        long embedBytes = v * h * dense * (config.TieWordEmbeddings ? 1 : 2);
        // Norms and biases stay float32.
        long otherBytes = (parameters - config.NumHiddenLayers * projectionValues - v * h * (config.TieWordEmbeddings ? 1 : 2)) * 4;
        long weights = config.NumHiddenLayers * projectionBytes + embedBytes + otherBytes;
        if (workload is null)
        {
            return new ModelMemoryEstimate(parameters, weights, 0, 0, RuntimeOverhead);
        }
        long adapter = 0;
        if (workload.Lora is { } lora)
        {
            foreach (var (name, inFeatures, outFeatures) in projections.Where(p => lora.Targets.Contains(p.Name)))
            {
                // A and B in float32; what trains also holds a gradient and two AdamW moments.
                long a = lora.Rank * inFeatures, b = outFeatures * lora.Rank;
                adapter += config.NumHiddenLayers * ((a + b) * 4 + ((lora.FreezeA ? 0 : a) + b) * 12);
            }
        }
        long tokens = (long)workload.BatchSize * workload.SequenceLength;
        long q = (long)config.NumAttentionHeads * config.HeadDim;
        long i = config.IntermediateSize;
        // Float32 values autograd keeps per token of one layer: norm inputs and outputs, q/k/v/attention output and
        // its merged copy, and the MLP's gate, activation, up and product.
        long perLayer = tokens * (4 * h + 5 * q + 4 * i) * 4;
        long layers = checkpoint ? config.NumHiddenLayers * tokens * h * 4 + perLayer : config.NumHiddenLayers * perLayer;
        long chunk = lossChunkTokens > 0 ? lossChunkTokens : ChunkTokens(v);
        // Gradients flowing back through one layer, the head's chunk logits (three live copies), the final hidden state.
        long working = tokens * (2 * i + 4 * h) * 4 + 3 * Math.Min(chunk, tokens) * v * 4 + 2 * tokens * h * 4;
        // A weight not held in the compute type is rebuilt per matmul: the largest projection, or the head once per pass.
        long rebuilt = storage.Quantization != BaseQuantization.None || storage.WeightType != storage.ComputeType
            ? Math.Max(projections.Max(p => p.In * p.Out), storage.WeightType != storage.ComputeType ? v * h : 0) * ElementSize(storage.ComputeType)
            : 0;
        return new ModelMemoryEstimate(parameters, weights, adapter, layers + working + rebuilt, RuntimeOverhead);
    }

    /// <summary>
    /// Whether checkpointing is on when not set: above <see cref="ModelLoadOptions.CheckpointByDefaultAbove"/> parameters, and
    /// for a known workload whose kept activations would outweigh the weights (a 0.5B model at 2 x 256 tokens keeps
    /// about 1.4 GB of them against 1 GB of bf16 weights; recomputing costs a third more compute for most of that).
    /// </summary>
    public static bool CheckpointByDefault(LlamaConfig config, WeightStorage storage, TrainingWorkload? workload)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(storage);
        if (ParameterCount(config) > ModelLoadOptions.CheckpointByDefaultAbove)
        {
            return true;
        }
        if (workload is null)
        {
            return false;
        }
        var plain = Estimate(config, storage, workload, checkpoint: false);
        var checkpointed = Estimate(config, storage, workload, checkpoint: true);
        return plain.ActivationBytes - checkpointed.ActivationBytes > plain.WeightBytes;
    }

    /// <summary>Tokens per head chunk that keep its float32 logits near 32 MiB.</summary>
    internal static long ChunkTokens(long vocabulary) => Math.Max(16, 32L * 1024 * 1024 / (vocabulary * 4));

    /// <summary>Bytes the OS can give this process now: MemAvailable, capped by a cgroup v2 limit when one is set.</summary>
    public static long AvailableBytes()
    {
        long available = long.MaxValue;
        if (File.Exists("/proc/meminfo"))
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                {
                    available = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        if (File.Exists("/sys/fs/cgroup/memory.max") && File.Exists("/sys/fs/cgroup/memory.current"))
        {
            string max = File.ReadAllText("/sys/fs/cgroup/memory.max").Trim();
            if (long.TryParse(max, NumberStyles.Integer, CultureInfo.InvariantCulture, out long limit)
                && long.TryParse(File.ReadAllText("/sys/fs/cgroup/memory.current").Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long used))
            {
                available = Math.Min(available, Math.Max(0, limit - used));
            }
        }
        return available;
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Gb(TotalBytes)} GB (weights {Gb(WeightBytes)}, adapter {Gb(AdapterBytes)}, activations {Gb(ActivationBytes)}, runtime {Gb(RuntimeBytes)})");

    internal static string Gb(long bytes) => (bytes / 1e9).ToString("F1", CultureInfo.InvariantCulture);

    internal static IEnumerable<(string Name, long In, long Out)> Projections(LlamaConfig config)
    {
        long h = config.HiddenSize, q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        if (config.HasFusedProjections)
        {
            // Phi-3: one qkv_proj and one gate_up_proj, named as the LoRA targets are.
            yield return ("qkv_proj", h, q + 2 * kv);
            yield return ("o_proj", q, h);
            yield return ("gate_up_proj", h, 2L * config.IntermediateSize);
            yield return ("down_proj", config.IntermediateSize, h);
            yield break;
        }
        yield return ("q_proj", h, q);
        yield return ("k_proj", h, kv);
        yield return ("v_proj", h, kv);
        yield return ("o_proj", q, h);
        yield return ("gate_proj", h, config.IntermediateSize);
        yield return ("up_proj", h, config.IntermediateSize);
        yield return ("down_proj", config.IntermediateSize, h);
    }

    private static long ElementSize(ScalarType type) => type == ScalarType.Float32 ? 4 : 2;
}

/// <summary>The model would not fit: the message gives the estimate, the memory available and the settings that would fit.</summary>
public sealed class ModelMemoryException(string message, ModelMemoryEstimate estimate, long availableBytes) : InvalidOperationException(message)
{
    public ModelMemoryEstimate Estimate { get; } = estimate;

    public long AvailableBytes { get; } = availableBytes;
}
