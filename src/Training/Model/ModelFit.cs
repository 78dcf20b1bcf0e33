using Federated.Training.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>Refuses, before any weight is read, a model whose estimated peak exceeds the memory available, naming the settings that would fit.</summary>
internal static class ModelFit
{
    public static void Check(string modelDirectory, LlamaConfig config, WeightStorage storage, ModelLoadOptions options,
        bool checkpoint, Device device)
    {
        // GPU memory is not visible through TorchSharp; the check covers the CPU, where host memory is the limit.
        if (options.MemoryLimitBytes == 0 || device.type != DeviceType.CPU)
        {
            return;
        }
        long available = options.MemoryLimitBytes ?? ModelMemoryEstimate.AvailableBytes();
        var estimate = ModelMemoryEstimate.Estimate(config, storage, options.Workload, checkpoint, options.LossChunkTokens);
        if (estimate.TotalBytes <= available)
        {
            return;
        }
        var fitting = new List<string>();
        (string Flags, long Bytes)? smallest = null;
        foreach (var (flags, alternative, alternativeCheckpoint) in Alternatives(storage, checkpoint, options.Capabilities ?? DeviceCapabilities.Detect(device)))
        {
            long bytes = ModelMemoryEstimate.Estimate(config, alternative, options.Workload, alternativeCheckpoint, options.LossChunkTokens).TotalBytes;
            if (bytes <= available)
            {
                fitting.Add($"{flags} (estimated {ModelMemoryEstimate.Gb(bytes)} GB)");
            }
            if (smallest is null || bytes < smallest.Value.Bytes)
            {
                smallest = (flags, bytes);
            }
        }
        string what = options.Workload is { } w ? $"to train at batch {w.BatchSize} x {w.SequenceLength}" : "to load";
        string advice = fitting.Count > 0
            ? $"these would fit: {string.Join("; ", fitting)}"
            : smallest is { } s
                ? $"even {s.Flags} needs an estimated {ModelMemoryEstimate.Gb(s.Bytes)} GB; use a smaller batch or sequence length, or a machine with more memory"
                : "use a smaller batch or sequence length, or a machine with more memory";
        throw new ModelMemoryException(
            $"model '{modelDirectory}' ({estimate.Parameters / 1e9:F2} B parameters) needs an estimated {estimate} {what}, but {ModelMemoryEstimate.Gb(available)} GB is available; {advice}",
            estimate, available);
    }

    /// <summary>Cheaper settings in the order a user would try them: checkpointing, bf16, then 8- and 4-bit bases.</summary>
    private static IEnumerable<(string Flags, WeightStorage Storage, bool Checkpoint)> Alternatives(WeightStorage storage, bool checkpoint,
        DeviceCapabilities capabilities)
    {
        const string Checkpointing = "--checkpoint-activations";
        if (!checkpoint)
        {
            yield return (Checkpointing, storage, true);
        }
        var compute = storage;
        string precision = "";
        if (storage.ComputeType == ScalarType.Float32 && capabilities.NativeBf16Matmul)
        {
            compute = storage with
            {
                ComputeType = ScalarType.BFloat16,
                WeightType = storage.WeightType == ScalarType.Float32 ? ScalarType.BFloat16 : storage.WeightType,
            };
            precision = "--precision bf16 ";
            yield return ((precision + Checkpointing).Trim(), compute, true);
        }
        foreach (var quantization in new[] { BaseQuantization.Int8, BaseQuantization.Nf4 })
        {
            if (storage.Quantization < quantization)
            {
                yield return ($"{precision}--quantize {PrecisionChoices.Name(quantization)} {Checkpointing}", compute with { Quantization = quantization }, true);
            }
        }
    }
}
