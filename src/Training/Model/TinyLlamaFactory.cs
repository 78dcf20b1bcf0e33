using Federated.Training.SafeTensors;
using TorchSharp;

namespace Federated.Training.Model;

/// <summary>Writes small random Llama models in Hugging Face format (config.json + model.safetensors) for simulations and tests.</summary>
public static class TinyLlamaFactory
{
    /// <summary>A small grouped-query Llama: 2 layers, hidden 64, 4 heads over 2 key/value heads.</summary>
    public static LlamaConfig DefaultConfig(int vocabSize = 256, bool tieWordEmbeddings = false) => new()
    {
        ModelType = "llama",
        VocabSize = vocabSize,
        HiddenSize = 64,
        IntermediateSize = 128,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        HeadDim = 16,
        RmsNormEps = 1e-6,
        RopeTheta = 10000,
        TieWordEmbeddings = tieWordEmbeddings,
        MaxPositionEmbeddings = 512,
        TorchDtype = "float32",
    };

    /// <summary>
    /// Creates <paramref name="directory"/> with config.json and model.safetensors holding weights initialised as
    /// transformers does (normal(0, <paramref name="initStd"/>), norms 1) from <paramref name="seed"/>, stored as
    /// <paramref name="dtype"/>.
    /// </summary>
    public static void Write(string directory, LlamaConfig config, long seed, SafeTensorDType dtype = SafeTensorDType.F32,
        double initStd = 0.02)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(initStd);
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(config);
        if (dtype is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "model weights must be F32, F16 or BF16");
        }
        config.Validate();
        using var model = new LlamaForCausalLM(config, torch.CPU);
        model.InitializeRandom(seed, initStd);
        model.SavePretrained(directory, dtype);
    }
}
