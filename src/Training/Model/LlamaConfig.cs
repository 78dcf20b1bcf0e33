using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Federated.Training.Model;

/// <summary>The architecture of a LlamaForCausalLM-family model (Llama, TinyLlama, SmolLM, Mistral, Qwen2), read from a Hugging Face config.json.</summary>
public sealed record LlamaConfig
{
    /// <summary>The model_type values this loader understands; each is a decoder with RMSNorm, rotary embeddings and a SiLU-gated MLP.</summary>
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2"];

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

    /// <summary>Bias on q, k and v projections (Llama attention_bias, always on for Qwen2).</summary>
    public bool QkvBias { get; init; }

    /// <summary>Bias on the output projection (Llama attention_bias; never on Qwen2).</summary>
    public bool OutputBias { get; init; }

    /// <summary>Bias on gate, up and down projections (Llama mlp_bias).</summary>
    public bool MlpBias { get; init; }

    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>Mistral's (and Qwen2's, when use_sliding_window) attention window; longer sequences are refused, not silently changed.</summary>
    public int? SlidingWindow { get; init; }
    public string TorchDtype { get; init; } = "float32";

    /// <summary>Whether config.json named torch_dtype; only then must the checkpoint's weights have that type.</summary>
    public bool DeclaresTorchDtype { get; init; }

    /// <summary>Reads and validates <c>config.json</c> in a Hugging Face model folder.</summary>
    public static LlamaConfig Load(string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        string path = Path.Combine(modelDirectory, "config.json");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"model folder '{modelDirectory}' has no config.json", path);
        }
        return Parse(File.ReadAllText(path));
    }

    /// <summary>Parses and validates the text of a Hugging Face config.json.</summary>
    public static LlamaConfig Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        try
        {
            return ParseCore(json);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException)
        {
            // JsonNode.GetValue throws these when a field has the wrong JSON type.
            throw new InvalidDataException($"config.json has a field of the wrong type: {e.Message}", e);
        }
    }

    private static LlamaConfig ParseCore(string json)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException("config.json is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"config.json is not valid JSON: {e.Message}", e);
        }

        string modelType = GetString(root, "model_type") ?? throw new InvalidDataException("config.json has no model_type");
        if (!SupportedModelTypes.Contains(modelType))
        {
            throw new InvalidDataException(
                $"config.json model_type '{modelType}' is not in the Llama family; supported: {string.Join(", ", SupportedModelTypes)}");
        }
        if (root["architectures"] is JsonArray architectures)
        {
            foreach (var arch in architectures)
            {
                string? name = arch?.GetValue<string>();
                if (name is not ("LlamaForCausalLM" or "MistralForCausalLM" or "Qwen2ForCausalLM"))
                {
                    throw new InvalidDataException(
                        $"config.json architecture '{name}' is not supported; expected LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM");
                }
            }
        }

        int hidden = RequireInt(root, "hidden_size");
        int heads = RequireInt(root, "num_attention_heads");
        int kvHeads = GetInt(root, "num_key_value_heads") ?? heads;
        int? headDim = GetInt(root, "head_dim");
        bool attentionBias = GetBool(root, "attention_bias") ?? false;
        bool isQwen2 = modelType == "qwen2";
        var config = new LlamaConfig
        {
            ModelType = modelType,
            VocabSize = RequireInt(root, "vocab_size"),
            HiddenSize = hidden,
            IntermediateSize = RequireInt(root, "intermediate_size"),
            NumHiddenLayers = RequireInt(root, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim ?? (heads > 0 ? hidden / heads : 0),
            RmsNormEps = GetDouble(root, "rms_norm_eps") ?? 1e-6,
            RopeTheta = GetDouble(root, "rope_theta") ?? 10000.0,
            RopeScaling = Model.RopeScaling.Parse(root["rope_scaling"]),
            TieWordEmbeddings = GetBool(root, "tie_word_embeddings") ?? false,
            QkvBias = isQwen2 || attentionBias,
            OutputBias = !isQwen2 && attentionBias,
            MlpBias = GetBool(root, "mlp_bias") ?? false,
            MaxPositionEmbeddings = GetInt(root, "max_position_embeddings") ?? 2048,
            SlidingWindow = modelType == "mistral" || (isQwen2 && (GetBool(root, "use_sliding_window") ?? false))
                ? GetInt(root, "sliding_window")
                : null,
            TorchDtype = GetString(root, "torch_dtype") ?? GetString(root, "dtype") ?? "float32",
            DeclaresTorchDtype = GetString(root, "torch_dtype") is not null || GetString(root, "dtype") is not null,
        };
        config.Validate();
        return config;
    }

    /// <summary>Checks every size; a message names the field and the allowed range.</summary>
    public void Validate()
    {
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
        {
            throw new InvalidDataException(
                $"num_attention_heads {NumAttentionHeads} must be a multiple of num_key_value_heads {NumKeyValueHeads}");
        }
        if (HeadDim % 2 != 0)
        {
            throw new InvalidDataException($"head_dim {HeadDim} must be even for rotary embeddings");
        }
        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps))
        {
            throw new InvalidDataException($"rms_norm_eps {RmsNormEps} must be a positive finite number");
        }
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta))
        {
            throw new InvalidDataException($"rope_theta {RopeTheta} must be a positive finite number");
        }
        RopeScaling?.Validate();
        if (SlidingWindow is <= 0)
        {
            throw new InvalidDataException($"sliding_window {SlidingWindow} must be a positive integer");
        }
    }

    /// <summary>Writes the config as a Hugging Face config.json text.</summary>
    public string ToJson()
    {
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType switch
            {
                "mistral" => "MistralForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                _ => "LlamaForCausalLM",
            }),
            ["model_type"] = ModelType,
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim,
            ["hidden_act"] = "silu",
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["rope_scaling"] = RopeScaling?.ToJson(),
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
        };
        if (DeclaresTorchDtype)
        {
            root["torch_dtype"] = TorchDtype;
        }
        if (SlidingWindow is { } window)
        {
            root["sliding_window"] = window;
            if (ModelType == "qwen2")
            {
                root["use_sliding_window"] = true;
            }
        }
        if (ModelType == "llama")
        {
            root["attention_bias"] = QkvBias;
            root["mlp_bias"] = MlpBias;
        }
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0)
        {
            throw new InvalidDataException($"config.json {name} is {value}; it must be a positive integer");
        }
    }

    private static string? GetString(JsonObject root, string key) =>
        root[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    private static bool? GetBool(JsonObject root, string key) =>
        root[key] is JsonValue v && v.TryGetValue(out bool b) ? b : null;

    internal static double? GetDouble(JsonObject root, string key)
    {
        if (root[key] is not JsonValue v)
        {
            return null;
        }
        if (v.TryGetValue(out double d))
        {
            return d;
        }
        if (v.TryGetValue(out string? s) && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out d))
        {
            return d;
        }
        throw new InvalidDataException($"config.json {key} is not a number");
    }

    private static int? GetInt(JsonObject root, string key)
    {
        if (root[key] is null)
        {
            return null;
        }
        double? d = GetDouble(root, key);
        if (d is not { } value || value != Math.Floor(value) || value > int.MaxValue || value < int.MinValue)
        {
            throw new InvalidDataException($"config.json {key} is not an integer");
        }
        return (int)value;
    }

    private static int RequireInt(JsonObject root, string key) =>
        GetInt(root, key) ?? throw new InvalidDataException($"config.json has no {key}");
}

/// <summary>Rotary-embedding frequency scaling from config.json rope_scaling: none, linear, or Llama 3's.</summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor = 1.0, double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192)
{
    internal static RopeScaling? Parse(JsonNode? node)
    {
        if (node is null)
        {
            return null;
        }
        if (node is not JsonObject obj)
        {
            throw new InvalidDataException("config.json rope_scaling must be an object or null");
        }
        string type = (obj["rope_type"] ?? obj["type"])?.GetValue<string>() ?? "default";
        switch (type)
        {
            case "default":
                return null;
            case "linear":
                return new RopeScaling("linear", LlamaConfig.GetDouble(obj, "factor") ?? 1.0);
            case "llama3":
                return new RopeScaling(
                    "llama3",
                    LlamaConfig.GetDouble(obj, "factor") ?? throw new InvalidDataException("rope_scaling llama3 has no factor"),
                    LlamaConfig.GetDouble(obj, "low_freq_factor") ?? throw new InvalidDataException("rope_scaling llama3 has no low_freq_factor"),
                    LlamaConfig.GetDouble(obj, "high_freq_factor") ?? throw new InvalidDataException("rope_scaling llama3 has no high_freq_factor"),
                    (int)(LlamaConfig.GetDouble(obj, "original_max_position_embeddings")
                        ?? throw new InvalidDataException("rope_scaling llama3 has no original_max_position_embeddings")));
            default:
                throw new InvalidDataException($"rope_scaling type '{type}' is not supported; supported: default, linear, llama3");
        }
    }

    internal void Validate()
    {
        if (!(Factor > 0) || !double.IsFinite(Factor))
        {
            throw new InvalidDataException($"rope_scaling factor {Factor} must be a positive finite number");
        }
        if (Type == "llama3")
        {
            if (!(LowFreqFactor > 0) || !(HighFreqFactor > LowFreqFactor))
            {
                throw new InvalidDataException(
                    $"rope_scaling needs 0 < low_freq_factor ({LowFreqFactor}) < high_freq_factor ({HighFreqFactor})");
            }
            if (OriginalMaxPositionEmbeddings <= 0)
            {
                throw new InvalidDataException($"rope_scaling original_max_position_embeddings {OriginalMaxPositionEmbeddings} must be positive");
            }
        }
    }

    internal JsonObject ToJson()
    {
        var obj = new JsonObject { ["rope_type"] = Type, ["factor"] = Factor };
        if (Type == "llama3")
        {
            obj["low_freq_factor"] = LowFreqFactor;
            obj["high_freq_factor"] = HighFreqFactor;
            obj["original_max_position_embeddings"] = OriginalMaxPositionEmbeddings;
        }
        return obj;
    }

    /// <summary>The rotary inverse frequencies for one head, scaled as transformers' rope init functions do.</summary>
    /// <remarks>Computed in float32 like transformers' _compute_default_rope_parameters / _compute_llama3_parameters.</remarks>
    public static float[] InverseFrequencies(int headDim, double theta, RopeScaling? scaling)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(headDim);
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), exponent and power in float32.
            float exponent = (float)(2 * i) / headDim;
            inv[i] = 1.0f / MathF.Pow((float)theta, exponent);
        }
        if (scaling is null)
        {
            return inv;
        }
        if (scaling.Type == "linear")
        {
            // transformers applies linear scaling to positions: t / factor, equivalent to inv_freq / factor.
            for (int i = 0; i < inv.Length; i++)
            {
                inv[i] = (float)(inv[i] / scaling.Factor);
            }
            return inv;
        }
        // transformers modeling_rope_utils._compute_llama3_parameters.
        float factor = (float)scaling.Factor;
        float low = (float)scaling.LowFreqFactor;
        float high = (float)scaling.HighFreqFactor;
        float oldContext = scaling.OriginalMaxPositionEmbeddings;
        float lowFreqWavelen = oldContext / low;
        float highFreqWavelen = oldContext / high;
        for (int i = 0; i < inv.Length; i++)
        {
            float wavelen = 2f * MathF.PI / inv[i];
            float scaled = wavelen > lowFreqWavelen ? inv[i] / factor : inv[i];
            bool medium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
            if (medium)
            {
                float smooth = (oldContext / wavelen - low) / (high - low);
                scaled = (1 - smooth) * scaled / factor + smooth * scaled;
            }
            inv[i] = scaled;
        }
        return inv;
    }
}
