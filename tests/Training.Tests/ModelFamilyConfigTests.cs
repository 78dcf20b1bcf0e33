using Federated.Training.Model;

namespace Federated.Training.Tests;

public sealed class ModelFamilyConfigTests
{
    // microsoft/Phi-4-mini-instruct's config.json (factor lists shortened to their length, 48 = 128 * 0.75 / 2).
    private const string Phi4Mini = """
        {
          "architectures": ["Phi3ForCausalLM"], "attention_bias": false, "bos_token_id": 199999, "eos_token_id": 199999,
          "full_attn_mod": 1, "hidden_act": "silu", "hidden_size": 3072, "intermediate_size": 8192, "lm_head_bias": false,
          "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "phi3", "num_attention_heads": 24,
          "num_hidden_layers": 32, "num_key_value_heads": 8, "original_max_position_embeddings": 4096,
          "partial_rotary_factor": 0.75, "rms_norm_eps": 1e-05,
          "rope_scaling": {"long_factor": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5, 14.0, 14.5, 15.0, 15.5, 16.0, 16.5, 17.0, 17.5, 18.0, 18.5, 19.0, 19.5, 20.0, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0, 23.5, 24.0, 24.5], "short_factor": [SHORTS], "type": "longrope"},
          "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
          "vocab_size": 200064
        }
        """;

    private static readonly string s_phi4Mini = Phi4(null, null);

    // google/gemma-2-2b's config.json.
    private const string Gemma2 = """
        {
          "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attn_logit_softcapping": 50.0,
          "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0,
          "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
          "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
          "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
          "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32", "vocab_size": 256000
        }
        """;

    // Qwen/Qwen3-0.6B's config.json.
    private const string Qwen3 = """
        {
          "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643, "eos_token_id": 151645,
          "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
          "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16,
          "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
          "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
          "use_cache": true, "use_sliding_window": false, "vocab_size": 151936
        }
        """;

    [Fact]
    public void Parse_Phi4Mini_ReadsFusedLayoutPartialRotaryAndLongRope()
    {
        var config = LlamaConfig.Parse(s_phi4Mini);

        Assert.True(config.HasFusedProjections);
        Assert.Equal(["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], config.ProjectionNames);
        Assert.Equal(128, config.HeadDim);
        Assert.Equal(96, config.RotaryDim);
        Assert.Equal(1e-5, config.RmsNormEps);
        Assert.True(config.TieWordEmbeddings);
        Assert.False(config.QkvBias);
        Assert.Equal(262144, config.SlidingWindow);
        Assert.True(config.LayerSlides(31));
        var rope = config.RopeScaling!;
        Assert.Equal("longrope", rope.Type);
        Assert.Equal(4096, rope.OriginalMaxPositionEmbeddings);
        Assert.Equal(32.0, rope.Factor);
        Assert.Equal(48, rope.LongFactor.Count);
        // transformers: sqrt(1 + ln(131072 / 4096) / ln(4096)).
        Assert.Equal(1.1902380714238083, rope.AttentionFactor, 12);
        Assert.False(rope.UsesLongFactors(4096));
        Assert.True(rope.UsesLongFactors(4097));
        Assert.Equal(config, LlamaConfig.Parse(config.ToJson()));
    }

    [Fact]
    public void InverseFrequencies_LongRope_DividesByTheFactorForItsLength()
    {
        var rope = LlamaConfig.Parse(s_phi4Mini).RopeScaling!;

        float[] shortInv = RopeScaling.InverseFrequencies(96, 10000, rope);
        float[] longInv = RopeScaling.InverseFrequencies(96, 10000, rope, longFactors: true);
        float[] plain = RopeScaling.InverseFrequencies(96, 10000, null);

        Assert.Equal(plain, shortInv);
        for (int i = 0; i < 48; i++)
        {
            Assert.Equal(plain[i] / (1.0 + i * 0.5), longInv[i], 1e-6 * plain[i]);
        }
    }

    [Fact]
    public void Parse_Gemma2_ReadsNormsCapsScalarAndAlternatingWindow()
    {
        var config = LlamaConfig.Parse(Gemma2);

        Assert.True(config.IsGemma2);
        Assert.Equal(256, config.HeadDim);
        Assert.Equal("gelu_pytorch_tanh", config.HiddenActivation);
        Assert.Equal(50.0, config.AttnLogitSoftcapping);
        Assert.Equal(30.0, config.FinalLogitSoftcapping);
        Assert.Equal(1.0 / 16, config.AttentionScale);
        Assert.True(config.TieWordEmbeddings);
        Assert.Equal([true, false, true, false], Enumerable.Range(0, 4).Select(config.LayerSlides));
        Assert.Equal(config, LlamaConfig.Parse(config.ToJson()));
    }

    [Fact]
    public void Parse_Gemma2CapsSetToNull_TurnsThemOff()
    {
        var config = LlamaConfig.Parse(Gemma2.Replace("\"attn_logit_softcapping\": 50.0", "\"attn_logit_softcapping\": null", StringComparison.Ordinal));

        Assert.Null(config.AttnLogitSoftcapping);
        Assert.Equal(30.0, config.FinalLogitSoftcapping);
    }

    [Fact]
    public void Parse_Qwen3_HasQkNormAndDecoupledHeadDim()
    {
        var config = LlamaConfig.Parse(Qwen3);

        Assert.True(config.HasQkNorm);
        Assert.Equal(128, config.HeadDim);
        Assert.False(config.QkvBias);
        Assert.Null(config.SlidingWindow);
        Assert.Equal(1e6, config.RopeTheta);
        Assert.Equal(config, LlamaConfig.Parse(config.ToJson()));
    }

    [Fact]
    public void Parse_Qwen3SlidingWindow_SlidesFromMaxWindowLayers()
    {
        var config = LlamaConfig.Parse(Qwen3.Replace("\"use_sliding_window\": false", "\"use_sliding_window\": true", StringComparison.Ordinal)
            .Replace("\"sliding_window\": null", "\"sliding_window\": 4096", StringComparison.Ordinal)
            .Replace("\"max_window_layers\": 28", "\"max_window_layers\": 20", StringComparison.Ordinal));

        Assert.False(config.LayerSlides(19));
        Assert.True(config.LayerSlides(20));
    }

    [Fact]
    public void Parse_UnknownArchitecture_NamesConfigJsonAndTheValue()
    {
        var e = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse(
            Qwen3.Replace("Qwen3ForCausalLM", "Qwen3MoeForCausalLM", StringComparison.Ordinal)));

        Assert.Contains("config.json", e.Message);
        Assert.Contains("'Qwen3MoeForCausalLM'", e.Message);
    }

    [Fact]
    public void Parse_UnknownModelType_NamesConfigJsonAndTheValue()
    {
        var e = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse(
            Gemma2.Replace("\"model_type\": \"gemma2\"", "\"model_type\": \"gemma3_text\"", StringComparison.Ordinal)));

        Assert.Contains("config.json model_type 'gemma3_text'", e.Message);
    }

    [Theory]
    [InlineData("\"type\": \"longrope\"", "\"type\": \"yarn\"", "rope_scaling type 'yarn'")]
    [InlineData("\"type\": \"longrope\"", "\"type\": \"dynamic\"", "rope_scaling type 'dynamic'")]
    [InlineData("\"short_factor\": [", "\"short_factor\": [2.0, ", "short_factor has 49 values")]
    [InlineData(", \"short_factor\": [SHORTS]", "", "has no short_factor")]
    [InlineData("\"partial_rotary_factor\": 0.75", "\"partial_rotary_factor\": 0.5", "short_factor has 48 values; 64 rotary dimensions need 32")]
    [InlineData("\"hidden_act\": \"silu\"", "\"hidden_act\": \"relu2\"", "hidden_act 'relu2'")]
    public void Parse_Phi3UnsupportedOrBrokenKey_NamesTheKey(string find, string replace, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse(Phi4(find, replace)));

        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Parse_SuScaling_IsLongRope()
    {
        var config = LlamaConfig.Parse(Phi4("\"type\": \"longrope\"", "\"type\": \"su\""));

        Assert.Equal("longrope", config.RopeScaling!.Type);
    }

    [Fact]
    public void Parse_TransformersFiveRopeParameters_ReadsThetaAndPartialFactor()
    {
        var config = LlamaConfig.Parse("""
            {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": 100, "hidden_size": 64,
             "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "rope_parameters": {"rope_type": "default", "rope_theta": 250000.0, "partial_rotary_factor": 0.5}}
            """);

        Assert.Equal(250000.0, config.RopeTheta);
        Assert.Equal(8, config.RotaryDim);
        Assert.Null(config.RopeScaling);
    }

    /// <summary>Phi-4-mini's config with one text replaced, its 48 short factors all 1.0.</summary>
    private static string Phi4(string? find, string? replace)
    {
        string json = find is null ? Phi4Mini : Phi4Mini.Replace(find, replace, StringComparison.Ordinal);
        return json.Replace("SHORTS", string.Join(", ", Enumerable.Repeat("1.0", 48)), StringComparison.Ordinal);
    }
}
