using Federated.Training.Model;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Benchmarks;

/// <summary>The real models' shapes (from their config.json) and a writer of random bf16 checkpoints of them, one tensor at a time.</summary>
internal static class RandomCheckpoint
{
    public static readonly IReadOnlyDictionary<string, LlamaConfig> Shapes = new Dictionary<string, LlamaConfig>(StringComparer.Ordinal)
    {
        ["qwen2.5-0.5b"] = new()
        {
            ModelType = "qwen2", VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24,
            NumAttentionHeads = 14, NumKeyValueHeads = 2, HeadDim = 64, RmsNormEps = 1e-6, RopeTheta = 1_000_000,
            TieWordEmbeddings = true, QkvBias = true, MaxPositionEmbeddings = 32768,
        },
        ["llama-3.2-1b"] = new()
        {
            ModelType = "llama", VocabSize = 128256, HiddenSize = 2048, IntermediateSize = 8192, NumHiddenLayers = 16,
            NumAttentionHeads = 32, NumKeyValueHeads = 8, HeadDim = 64, RmsNormEps = 1e-5, RopeTheta = 500_000,
            RopeScaling = new RopeScaling("llama3", 32, 1, 4, 8192), TieWordEmbeddings = true, MaxPositionEmbeddings = 131072,
        },
        ["llama-3.1-8b"] = new()
        {
            ModelType = "llama", VocabSize = 128256, HiddenSize = 4096, IntermediateSize = 14336, NumHiddenLayers = 32,
            NumAttentionHeads = 32, NumKeyValueHeads = 8, HeadDim = 128, RmsNormEps = 1e-5, RopeTheta = 500_000,
            RopeScaling = new RopeScaling("llama3", 8, 1, 4, 8192), TieWordEmbeddings = false, MaxPositionEmbeddings = 131072,
        },
    };

    /// <summary>
    /// Writes config.json and model.safetensors with weights drawn as transformers initialises them (normal(0, 0.02),
    /// norms 1, biases 0), generated and written in slices so that even the 8B shape needs little memory.
    /// </summary>
    public static void Write(string directory, LlamaConfig config, long seed)
    {
        Directory.CreateDirectory(directory);
        var config16 = config with { TorchDtype = "bfloat16", DeclaresTorchDtype = true };
        List<(string Name, long[] Shape)> weights;
        // The meta device gives every parameter's name and shape without allocating a byte of weights.
        using (var layout = new LlamaForCausalLM(config16, new Device(DeviceType.META)))
        {
            weights = layout.BaseWeights().Select(w => (w.Name, w.Tensor.shape)).ToList();
        }
        using var generator = new Generator((ulong)seed);
        var specs = weights.Select(w => new SafeTensorSpec(w.Name, SafeTensorDType.BF16, w.Shape, stream => WriteRandom(stream, w.Name, w.Shape, generator)));
        SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"), specs, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(directory, "config.json"), config16.ToJson());
    }

    private static void WriteRandom(Stream stream, string name, long[] shape, Generator generator)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        const long slice = 8L * 1024 * 1024;
        for (long start = 0; start < count; start += slice)
        {
            using var scope = torch.NewDisposeScope();
            long n = Math.Min(slice, count - start);
            Tensor values = name.EndsWith("norm.weight", StringComparison.Ordinal) ? torch.ones(n)
                : name.EndsWith(".bias", StringComparison.Ordinal) ? torch.zeros(n)
                : torch.randn([n], generator: generator).mul_(0.02);
            SafeTensorsWriter.WriteData(stream, values, SafeTensorDType.BF16);
        }
    }
}
