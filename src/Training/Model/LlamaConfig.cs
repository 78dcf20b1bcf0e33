namespace Federated.Training.Model;

/// <summary>
/// The architecture of a decoder-only causal LM of a supported family (Llama, TinyLlama, SmolLM, Mistral, Qwen2,
/// Qwen3, Phi-3 / Phi-4-mini, Gemma 2), read from a Hugging Face config.json.
/// </summary>
/// <remarks>
/// The name is historical: every supported family is a Llama-style pre-norm decoder with rotary embeddings and a
/// gated MLP; what differs between them is said by the family-specific properties below, each named after its
/// config.json key.
/// </remarks>
public sealed partial record LlamaConfig
{
    /// <summary>config.json model_type to the architecture name transformers builds for it.</summary>
    private static readonly (string ModelType, string Architecture)[] s_families =
    [
        ("llama", "LlamaForCausalLM"),
        ("mistral", "MistralForCausalLM"),
        ("qwen2", "Qwen2ForCausalLM"),
        ("qwen3", "Qwen3ForCausalLM"),
        ("phi3", "Phi3ForCausalLM"),
        ("gemma2", "Gemma2ForCausalLM"),
    ];

    /// <summary>The model_type values this loader understands.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes = s_families.Select(f => f.ModelType).ToArray();

    /// <summary>The architectures values this loader understands (one per model_type).</summary>
    public static readonly IReadOnlyList<string> SupportedArchitectures = s_families.Select(f => f.Architecture).ToArray();

    /// <summary>The MLP activations (config.json hidden_act / hidden_activation) this model implements.</summary>
    public static readonly IReadOnlyList<string> SupportedActivations = ["silu", "gelu", "gelu_pytorch_tanh"];

    public string ModelType { get; init; } = "llama";
    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int IntermediateSize { get; init; }
    public int NumHiddenLayers { get; init; }
    public int NumAttentionHeads { get; init; }
    public int NumKeyValueHeads { get; init; }
    public int HeadDim { get; init; }
    public double RmsNormEps { get; init; } = 1e-6;
    public double RopeTheta { get; init; } = 10000.0;
    public RopeScaling? RopeScaling { get; init; }
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Bias on q, k and v projections (Llama and Qwen3 attention_bias, always on for Qwen2).</summary>
    public bool QkvBias { get; init; }

    /// <summary>Bias on the output projection (Llama and Qwen3 attention_bias; never on Qwen2).</summary>
    public bool OutputBias { get; init; }

    /// <summary>Bias on gate, up and down projections (Llama mlp_bias).</summary>
    public bool MlpBias { get; init; }

    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>
    /// The attention window of sliding layers (sliding_window): a query sees the last <c>SlidingWindow</c> positions,
    /// itself included. Which layers slide depends on the family (see <see cref="LayerSlides"/>).
    /// </summary>
    public int? SlidingWindow { get; init; }

    /// <summary>Qwen2 / Qwen3 max_window_layers: layers from this index on use the sliding window.</summary>
    public int MaxWindowLayers { get; init; } = 28;

    /// <summary>The MLP activation: silu, gelu (exact) or gelu_pytorch_tanh (Gemma 2).</summary>
    public string HiddenActivation { get; init; } = "silu";

    /// <summary>Phi-3 partial_rotary_factor: the fraction of each head that is rotated (Phi-4-mini: 0.75).</summary>
    public double PartialRotaryFactor { get; init; } = 1.0;

    /// <summary>Gemma 2 query_pre_attn_scalar: attention scores are scaled by its inverse square root instead of head_dim's.</summary>
    public double? QueryPreAttnScalar { get; init; }

    /// <summary>Gemma 2 attn_logit_softcapping: scores become cap · tanh(score / cap) before the mask and softmax.</summary>
    public double? AttnLogitSoftcapping { get; init; }

    /// <summary>Gemma 2 final_logit_softcapping: logits become cap · tanh(logit / cap).</summary>
    public double? FinalLogitSoftcapping { get; init; }

    public string TorchDtype { get; init; } = "float32";

    /// <summary>Whether config.json named torch_dtype; only then must the checkpoint's weights have that type.</summary>
    public bool DeclaresTorchDtype { get; init; }

    /// <summary>The architectures entry transformers writes for this model_type.</summary>
    public string Architecture => s_families.First(f => f.ModelType == ModelType).Architecture;

    /// <summary>Qwen3: RMSNorm over each head of q and k (q_norm, k_norm) before the rotary embedding.</summary>
    public bool HasQkNorm => ModelType == "qwen3";

    /// <summary>Phi-3: q, k and v in one qkv_proj and gate and up in one gate_up_proj.</summary>
    public bool HasFusedProjections => ModelType == "phi3";

    /// <summary>
    /// Gemma 2: RMSNorm scales by (1 + weight), the attention and MLP outputs are normed again before their residual
    /// (post_attention_layernorm, post_feedforward_layernorm, with pre_feedforward_layernorm before the MLP), and the
    /// embedding is scaled by sqrt(hidden_size).
    /// </summary>
    public bool IsGemma2 => ModelType == "gemma2";

    /// <summary>How many leading dimensions of each head the rotary embedding turns (transformers: int(head_dim · partial_rotary_factor)).</summary>
    public int RotaryDim => (int)(HeadDim * PartialRotaryFactor);

    /// <summary>The factor on q·kᵀ: query_pre_attn_scalar^-1/2 where given, else head_dim^-1/2.</summary>
    public double AttentionScale => 1.0 / Math.Sqrt(QueryPreAttnScalar ?? HeadDim);

    /// <summary>The linear layers of one decoder layer, by the names PEFT's target_modules use for this family.</summary>
    public IReadOnlyList<string> ProjectionNames => HasFusedProjections
        ? ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
        : ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    /// <summary>The attention projections: the LoRA targets when none are named.</summary>
    public IReadOnlyList<string> AttentionProjectionNames => HasFusedProjections
        ? ["qkv_proj", "o_proj"]
        : ["q_proj", "k_proj", "v_proj", "o_proj"];

    /// <summary>Whether decoder layer <paramref name="layer"/> attends through the sliding window, as transformers decides per family.</summary>
    public bool LayerSlides(int layer)
    {
        if (SlidingWindow is null)
        {
            return false;
        }
        return ModelType switch
        {
            "mistral" or "phi3" => true,
            // transformers Qwen2Config / Qwen3Config layer_types: sliding from max_window_layers on.
            "qwen2" or "qwen3" => layer >= MaxWindowLayers,
            // transformers Gemma2DecoderLayer: is_sliding = not bool(layer_idx % 2).
            "gemma2" => layer % 2 == 0,
            _ => false,
        };
    }

    /// <summary>Checks every size; a message names the field and the allowed range.</summary>
    public void Validate()
    {
        if (!SupportedModelTypes.Contains(ModelType))
        {
            throw new InvalidDataException(
                $"config.json model_type '{ModelType}' is not supported; supported: {string.Join(", ", SupportedModelTypes)}");
        }
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
        {
            throw new InvalidDataException(
                $"num_attention_heads {NumAttentionHeads} must be a multiple of num_key_value_heads {NumKeyValueHeads}");
        }
        if (!(PartialRotaryFactor > 0 && PartialRotaryFactor <= 1))
        {
            throw new InvalidDataException($"config.json partial_rotary_factor {PartialRotaryFactor} must be in (0, 1]");
        }
        if (RotaryDim < 2 || RotaryDim % 2 != 0)
        {
            throw new InvalidDataException(
                $"head_dim {HeadDim} x partial_rotary_factor {PartialRotaryFactor} gives {RotaryDim} rotary dimensions; it must be even and at least 2");
        }
        FinitePositive(RmsNormEps, "rms_norm_eps");
        FinitePositive(RopeTheta, "rope_theta");
        RopeScaling?.Validate(RotaryDim);
        if (SlidingWindow is <= 0)
        {
            throw new InvalidDataException($"config.json sliding_window {SlidingWindow} must be a positive integer");
        }
        if (MaxWindowLayers < 0)
        {
            throw new InvalidDataException($"config.json max_window_layers {MaxWindowLayers} must be 0 or more");
        }
        if (!SupportedActivations.Contains(HiddenActivation))
        {
            throw new InvalidDataException(
                $"config.json hidden_act '{HiddenActivation}' is not supported; supported: {string.Join(", ", SupportedActivations)}");
        }
        if (QueryPreAttnScalar is { } scalar)
        {
            FinitePositive(scalar, "query_pre_attn_scalar");
        }
        if (AttnLogitSoftcapping is { } attnCap)
        {
            FinitePositive(attnCap, "attn_logit_softcapping");
        }
        if (FinalLogitSoftcapping is { } finalCap)
        {
            FinitePositive(finalCap, "final_logit_softcapping");
        }
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0)
        {
            throw new InvalidDataException($"config.json {name} is {value}; it must be a positive integer");
        }
    }

    private static void FinitePositive(double value, string name)
    {
        if (!(value > 0) || !double.IsFinite(value))
        {
            throw new InvalidDataException($"config.json {name} {value} must be a positive finite number");
        }
    }
}
