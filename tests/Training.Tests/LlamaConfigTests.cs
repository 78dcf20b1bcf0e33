using Federated.Training.Model;

namespace Federated.Training.Tests;

public sealed class LlamaConfigTests
{
    private const string Llama31 = """
        {
          "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
          "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
          "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false, "attention_bias": false,
          "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
          "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        }
        """;

    [Fact]
    public void Parse_Llama31_ReadsEveryField()
    {
        var config = LlamaConfig.Parse(Llama31);

        Assert.Equal(128256, config.VocabSize);
        Assert.Equal(4096, config.HiddenSize);
        Assert.Equal(14336, config.IntermediateSize);
        Assert.Equal(32, config.NumHiddenLayers);
        Assert.Equal(8, config.NumKeyValueHeads);
        Assert.Equal(128, config.HeadDim);
        Assert.Equal(1e-5, config.RmsNormEps);
        Assert.Equal(500000.0, config.RopeTheta);
        Assert.False(config.TieWordEmbeddings);
        Assert.False(config.QkvBias);
        Assert.Equal("bfloat16", config.TorchDtype);
        Assert.Equal(new RopeScaling("llama3", 8.0, 1.0, 4.0, 8192), config.RopeScaling);
    }

    [Fact]
    public void Parse_Qwen2_HasQkvBiasButNoOutputBias()
    {
        var config = LlamaConfig.Parse("""
            {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
             "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true}
            """);

        Assert.True(config.QkvBias);
        Assert.False(config.OutputBias);
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal(64, config.HeadDim);
    }

    [Fact]
    public void Parse_Mistral_KeepsSlidingWindow()
    {
        var config = LlamaConfig.Parse("""
            {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096,
             "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
             "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096}
            """);

        Assert.Equal(4096, config.SlidingWindow);
        Assert.False(config.QkvBias);
        Assert.Equal(config, LlamaConfig.Parse(config.ToJson()));
    }

    [Fact]
    public void Parse_Gpt2_IsClearError()
    {
        var e = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse("""
            {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 50257, "n_embd": 768}
            """));
        Assert.Contains("config.json model_type 'gpt2' is not supported", e.Message);
        Assert.Contains("gemma2", e.Message);
    }

    [Fact]
    public void Parse_HeadsNotMultipleOfKvHeads_Throws()
    {
        var e = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse("""
            {"model_type": "llama", "vocab_size": 10, "hidden_size": 48, "intermediate_size": 8, "num_hidden_layers": 1,
             "num_attention_heads": 6, "num_key_value_heads": 4}
            """));
        Assert.Contains("num_key_value_heads", e.Message);
    }

    [Fact]
    public void ToJson_ThenParse_RoundTrips()
    {
        var config = LlamaConfig.Parse(Llama31);

        Assert.Equal(config, LlamaConfig.Parse(config.ToJson()));
    }

    [Fact]
    public void InverseFrequencies_Llama3Scaling_MatchesTransformers()
    {
        // Values printed by transformers' _compute_llama3_parameters (torch 1.13, float32) for Llama 3.1's rope:
        // head_dim 128, theta 500000, factor 8, low 1, high 4, original context 8192.
        (int Index, double Value)[] expected =
        [
            (0, 1.0), (1, 0.8146172165870667), (20, 0.016560440883040428), (25, 0.005940730683505535),
            (28, 0.0032114461064338684), (30, 0.0013718936825171113), (35, 9.556212171446532e-05),
            (40, 3.428102354519069e-05), (63, 3.068925877869333e-07),
        ];
        var config = LlamaConfig.Parse(Llama31);

        float[] inv = RopeScaling.InverseFrequencies(config.HeadDim, config.RopeTheta, config.RopeScaling);

        Assert.Equal(64, inv.Length);
        foreach (var (index, value) in expected)
        {
            Assert.True(Math.Abs(inv[index] - value) <= 2e-6 * value, $"inv_freq[{index}] = {inv[index]}, transformers {value}");
        }
    }

    [Fact]
    public void InverseFrequencies_NoScaling_IsThetaPower()
    {
        float[] inv = RopeScaling.InverseFrequencies(8, 10000, null);

        Assert.Equal([1f, 0.1f, 0.01f, 0.001f], inv.Select(v => MathF.Round(v, 6)).ToArray());
    }
}
