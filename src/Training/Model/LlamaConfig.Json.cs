using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Federated.Training.Model;

// Reading and writing config.json: which keys each family reads, and transformers' default for each missing one.
public sealed partial record LlamaConfig
{
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

    /// <summary>Writes the config as a Hugging Face config.json text.</summary>
    public string ToJson()
    {
        var root = new JsonObject
        {
            ["architectures"] = new JsonArray(Architecture),
            ["model_type"] = ModelType,
            ["vocab_size"] = VocabSize,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim,
            [IsGemma2 ? "hidden_activation" : "hidden_act"] = HiddenActivation,
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
        switch (ModelType)
        {
            case "llama":
                root["attention_bias"] = QkvBias;
                root["mlp_bias"] = MlpBias;
                break;
            case "qwen2":
            case "qwen3":
                if (ModelType == "qwen3")
                {
                    root["attention_bias"] = QkvBias;
                }
                root["use_sliding_window"] = SlidingWindow is not null;
                root["max_window_layers"] = MaxWindowLayers;
                break;
            case "phi3":
                root["partial_rotary_factor"] = PartialRotaryFactor;
                root["original_max_position_embeddings"] = RopeScaling?.OriginalMaxPositionEmbeddings ?? MaxPositionEmbeddings;
                break;
            case "gemma2":
                root["attention_bias"] = QkvBias;
                root["query_pre_attn_scalar"] = QueryPreAttnScalar;
                root["attn_logit_softcapping"] = AttnLogitSoftcapping;
                root["final_logit_softcapping"] = FinalLogitSoftcapping;
                break;
        }
        root["sliding_window"] = SlidingWindow;
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
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
                $"config.json model_type '{modelType}' is not supported; supported: {string.Join(", ", SupportedModelTypes)}");
        }
        if (root["architectures"] is JsonArray architectures)
        {
            foreach (var arch in architectures)
            {
                string? name = arch?.GetValue<string>();
                if (name is null || !SupportedArchitectures.Contains(name))
                {
                    throw new InvalidDataException(
                        $"config.json architectures value '{name}' is not supported; supported: {string.Join(", ", SupportedArchitectures)}");
                }
            }
        }

        bool gemma2 = modelType == "gemma2";
        bool phi3 = modelType == "phi3";
        int hidden = RequireInt(root, "hidden_size");
        int heads = RequireInt(root, "num_attention_heads");
        int maxPositions = GetInt(root, "max_position_embeddings") ?? (gemma2 ? 8192 : phi3 ? 4096 : 2048);
        bool attentionBias = GetBool(root, "attention_bias") ?? false;
        bool separateBias = modelType is "llama" or "qwen3" or "gemma2";
        // transformers 5 folds rope_theta and partial_rotary_factor into rope_parameters.
        string ropeKey = root["rope_scaling"] is not null ? "rope_scaling" : "rope_parameters";
        JsonObject? ropeObject = root[ropeKey] as JsonObject;
        var config = new LlamaConfig
        {
            ModelType = modelType,
            VocabSize = RequireInt(root, "vocab_size"),
            HiddenSize = hidden,
            IntermediateSize = RequireInt(root, "intermediate_size"),
            NumHiddenLayers = RequireInt(root, "num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = GetInt(root, "num_key_value_heads") ?? heads,
            HeadDim = GetInt(root, "head_dim") ?? (gemma2 ? 256 : heads > 0 ? hidden / heads : 0),
            RmsNormEps = GetDouble(root, "rms_norm_eps") ?? (phi3 ? 1e-5 : 1e-6),
            RopeTheta = GetDouble(root, "rope_theta") ?? (ropeObject is null ? null : GetDouble(ropeObject, "rope_theta")) ?? 10000.0,
            RopeScaling = RopeScaling.Parse(root[ropeKey], ropeKey, maxPositions,
                GetInt(root, "original_max_position_embeddings") ?? (phi3 ? 4096 : maxPositions)),
            TieWordEmbeddings = GetBool(root, "tie_word_embeddings") ?? gemma2,
            QkvBias = modelType == "qwen2" || (separateBias && attentionBias),
            OutputBias = separateBias && attentionBias,
            MlpBias = modelType == "llama" && (GetBool(root, "mlp_bias") ?? false),
            MaxPositionEmbeddings = maxPositions,
            SlidingWindow = SlidingWindowOf(root, modelType),
            MaxWindowLayers = GetInt(root, "max_window_layers") ?? 28,
            HiddenActivation = Activation(root, gemma2),
            PartialRotaryFactor = GetDouble(root, "partial_rotary_factor")
                ?? (ropeObject is null ? null : GetDouble(ropeObject, "partial_rotary_factor")) ?? 1.0,
            QueryPreAttnScalar = gemma2 ? GetDoubleOrDefault(root, "query_pre_attn_scalar", 256) : null,
            AttnLogitSoftcapping = gemma2 ? GetDoubleOrDefault(root, "attn_logit_softcapping", 50.0) : null,
            FinalLogitSoftcapping = gemma2 ? GetDoubleOrDefault(root, "final_logit_softcapping", 30.0) : null,
            TorchDtype = GetString(root, "torch_dtype") ?? GetString(root, "dtype") ?? "float32",
            DeclaresTorchDtype = GetString(root, "torch_dtype") is not null || GetString(root, "dtype") is not null,
        };
        config.Validate();
        return config;
    }

    private static int? SlidingWindowOf(JsonObject root, string modelType) => modelType switch
    {
        "mistral" or "phi3" => GetInt(root, "sliding_window"),
        // transformers Qwen2Config / Qwen3Config: sliding_window only when use_sliding_window.
        "qwen2" or "qwen3" => GetBool(root, "use_sliding_window") ?? false ? GetInt(root, "sliding_window") : null,
        // transformers Gemma2Config: sliding_window defaults to 4096.
        "gemma2" => root.ContainsKey("sliding_window") ? GetInt(root, "sliding_window") : 4096,
        _ => null,
    };

    private static string Activation(JsonObject root, bool gemma2)
    {
        // transformers Gemma2MLP reads hidden_activation; the other families read hidden_act.
        string? name = gemma2 ? GetString(root, "hidden_activation") ?? GetString(root, "hidden_act") : GetString(root, "hidden_act");
        return name switch
        {
            null => gemma2 ? "gelu_pytorch_tanh" : "silu",
            // transformers ACT2FN: swish is SiLU, gelu_new is the tanh approximation gelu_pytorch_tanh computes.
            "swish" => "silu",
            "gelu_new" => "gelu_pytorch_tanh",
            _ => name,
        };
    }

    private static string? GetString(JsonObject root, string key) =>
        root[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    private static bool? GetBool(JsonObject root, string key) =>
        root[key] is JsonValue v && v.TryGetValue(out bool b) ? b : null;

    /// <summary>The value, transformers' default when the key is absent, null when config.json says null (Gemma 2 caps turned off).</summary>
    private static double? GetDoubleOrDefault(JsonObject root, string key, double fallback) =>
        root.ContainsKey(key) ? GetDouble(root, key) : fallback;

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
