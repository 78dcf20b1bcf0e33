using Federated.Training.Model;

namespace Federated.Training.Tests;

/// <summary>Tiny configs of each supported family with every family feature switched on and large enough to matter.</summary>
internal static class TinyFamilies
{
    public static readonly string[] All = ["llama", "mistral", "qwen2", "qwen3", "phi3", "phi3-longrope", "gemma2"];

    public static LlamaConfig Config(string family)
    {
        var llama = TinyLlamaFactory.DefaultConfig(vocabSize: 64);
        return family switch
        {
            "llama" => llama with { QkvBias = true, OutputBias = true, MlpBias = true },
            "mistral" => llama with { ModelType = "mistral", SlidingWindow = 4 },
            "qwen2" => llama with { ModelType = "qwen2", QkvBias = true, SlidingWindow = 5, MaxWindowLayers = 1 },
            // head_dim 24 is not hidden / heads (16), as Qwen3-0.6B's 128 is not 1024 / 16.
            "qwen3" => llama with { ModelType = "qwen3", HeadDim = 24, TieWordEmbeddings = true },
            "phi3" => llama with { ModelType = "phi3", PartialRotaryFactor = 0.5, SlidingWindow = 7 },
            "phi3-longrope" => llama with
            {
                ModelType = "phi3",
                PartialRotaryFactor = 0.75,
                MaxPositionEmbeddings = 64,
                // 12 rotary dimensions: 6 factors each; the sequences of the tests cross the original context of 6.
                RopeScaling = new RopeScaling("longrope", 64.0 / 6, OriginalMaxPositionEmbeddings: 6)
                {
                    ShortFactor = [1.0, 1.2, 1.5, 2.0, 3.0, 4.0],
                    LongFactor = [1.0, 2.5, 4.0, 8.0, 16.0, 40.0],
                },
            },
            "gemma2" => llama with
            {
                ModelType = "gemma2",
                HiddenActivation = "gelu_pytorch_tanh",
                TieWordEmbeddings = true,
                SlidingWindow = 4,
                QueryPreAttnScalar = 9,
                // Small caps so that the soft-capping bends the scores and logits of a random model.
                AttnLogitSoftcapping = 1.5,
                FinalLogitSoftcapping = 2.0,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(family), family, "unknown tiny family"),
        };
    }
}
