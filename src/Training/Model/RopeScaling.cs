using System.Text.Json.Nodes;

namespace Federated.Training.Model;

/// <summary>Rotary-embedding frequency scaling from config.json rope_scaling: none, linear, Llama 3's, or LongRoPE (Phi-3).</summary>
/// <param name="Type">linear, llama3 or longrope.</param>
/// <param name="Factor">linear and llama3: the context factor; longrope: rope_scaling factor, else max_position_embeddings / original_max_position_embeddings.</param>
/// <param name="OriginalMaxPositionEmbeddings">llama3: the pre-training context; longrope: the length above which the long factors apply.</param>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor = 1.0, double HighFreqFactor = 4.0,
    int OriginalMaxPositionEmbeddings = 8192)
{
    /// <summary>The rope_scaling types this model implements.</summary>
    public static readonly IReadOnlyList<string> SupportedTypes = ["default", "linear", "llama3", "longrope", "su"];

    /// <summary>LongRoPE short_factor: per-frequency divisors used while the sequence fits the original context.</summary>
    public IReadOnlyList<double> ShortFactor { get; init; } = [];

    /// <summary>LongRoPE long_factor: per-frequency divisors used once the sequence is longer than the original context.</summary>
    public IReadOnlyList<double> LongFactor { get; init; } = [];

    /// <summary>LongRoPE rope_scaling attention_factor when config.json gives one; else derived from <see cref="Factor"/>.</summary>
    public double? ExplicitAttentionFactor { get; init; }

    /// <summary>Whether config.json gave longrope's factor (otherwise it is max_position_embeddings / original_max_position_embeddings).</summary>
    public bool FactorIsExplicit { get; init; }

    /// <summary>The factor transformers multiplies cos and sin by (attention_scaling): 1 except for LongRoPE.</summary>
    public double AttentionFactor
    {
        get
        {
            if (Type != "longrope")
            {
                return 1.0;
            }
            if (ExplicitAttentionFactor is { } explicitFactor)
            {
                return explicitFactor;
            }
            // transformers modeling_rope_utils._compute_longrope_parameters: sqrt(1 + ln(factor) / ln(original context)).
            return Factor <= 1.0 ? 1.0 : Math.Sqrt(1 + Math.Log(Factor) / Math.Log(OriginalMaxPositionEmbeddings));
        }
    }

    /// <summary>Whether a sequence of <paramref name="length"/> positions uses LongRoPE's long factors (transformers' longrope_frequency_update).</summary>
    public bool UsesLongFactors(long length) => Type == "longrope" && length > OriginalMaxPositionEmbeddings;

    public bool Equals(RopeScaling? other) =>
        other is not null && Type == other.Type && Factor.Equals(other.Factor) && LowFreqFactor.Equals(other.LowFreqFactor)
        && HighFreqFactor.Equals(other.HighFreqFactor) && OriginalMaxPositionEmbeddings == other.OriginalMaxPositionEmbeddings
        && ShortFactor.SequenceEqual(other.ShortFactor) && LongFactor.SequenceEqual(other.LongFactor)
        && Nullable.Equals(ExplicitAttentionFactor, other.ExplicitAttentionFactor) && FactorIsExplicit == other.FactorIsExplicit;

    public override int GetHashCode() => HashCode.Combine(Type, Factor, OriginalMaxPositionEmbeddings, ShortFactor.Count);

    /// <summary>Reads rope_scaling (or transformers 5's rope_parameters); null for the default rope.</summary>
    /// <param name="maxPositionEmbeddings">config.json max_position_embeddings (LongRoPE's default factor).</param>
    /// <param name="originalMaxPositionEmbeddings">config.json's top-level original_max_position_embeddings (Phi-3 keeps it there).</param>
    internal static RopeScaling? Parse(JsonNode? node, string key, int maxPositionEmbeddings, int originalMaxPositionEmbeddings)
    {
        if (node is null)
        {
            return null;
        }
        if (node is not JsonObject obj)
        {
            throw new InvalidDataException($"config.json {key} must be an object or null");
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
                    Require(obj, key, type, "factor"),
                    Require(obj, key, type, "low_freq_factor"),
                    Require(obj, key, type, "high_freq_factor"),
                    (int)Require(obj, key, type, "original_max_position_embeddings"));
            case "longrope":
            case "su":
                // transformers Phi3Config renames the older "su" to "longrope"; the computation is the same.
                int original = (int?)LlamaConfig.GetDouble(obj, "original_max_position_embeddings") ?? originalMaxPositionEmbeddings;
                double? factor = LlamaConfig.GetDouble(obj, "factor");
                return new RopeScaling("longrope", factor ?? (double)maxPositionEmbeddings / original, OriginalMaxPositionEmbeddings: original)
                {
                    ShortFactor = Factors(obj, key, "short_factor"),
                    LongFactor = Factors(obj, key, "long_factor"),
                    ExplicitAttentionFactor = LlamaConfig.GetDouble(obj, "attention_factor"),
                    FactorIsExplicit = factor is not null,
                };
            default:
                throw new InvalidDataException(
                    $"config.json {key} type '{type}' is not supported; supported: {string.Join(", ", SupportedTypes)}");
        }
    }

    internal void Validate(int rotaryDim)
    {
        if (!(Factor > 0) || !double.IsFinite(Factor))
        {
            throw new InvalidDataException($"rope_scaling factor {Factor} must be a positive finite number");
        }
        if (Type is "llama3" or "longrope" && OriginalMaxPositionEmbeddings <= 0)
        {
            throw new InvalidDataException($"rope_scaling original_max_position_embeddings {OriginalMaxPositionEmbeddings} must be positive");
        }
        if (Type == "llama3" && (!(LowFreqFactor > 0) || !(HighFreqFactor > LowFreqFactor)))
        {
            throw new InvalidDataException(
                $"rope_scaling needs 0 < low_freq_factor ({LowFreqFactor}) < high_freq_factor ({HighFreqFactor})");
        }
        if (Type == "longrope")
        {
            foreach (var (name, values) in new[] { ("short_factor", ShortFactor), ("long_factor", LongFactor) })
            {
                if (values.Count != rotaryDim / 2)
                {
                    throw new InvalidDataException(
                        $"rope_scaling {name} has {values.Count} values; {rotaryDim} rotary dimensions need {rotaryDim / 2}");
                }
                if (values.Any(v => !(v > 0) || !double.IsFinite(v)))
                {
                    throw new InvalidDataException($"rope_scaling {name} must hold positive finite numbers");
                }
            }
            if (ExplicitAttentionFactor is { } attention && (!(attention > 0) || !double.IsFinite(attention)))
            {
                throw new InvalidDataException($"rope_scaling attention_factor {attention} must be a positive finite number");
            }
        }
    }

    internal JsonObject ToJson()
    {
        if (Type == "longrope")
        {
            // Older transformers' Phi3Config accepts exactly type, short_factor and long_factor; add the rest only when given.
            var longRope = new JsonObject
            {
                ["type"] = "longrope",
                ["short_factor"] = new JsonArray(ShortFactor.Select(v => (JsonNode)JsonValue.Create(v)).ToArray()),
                ["long_factor"] = new JsonArray(LongFactor.Select(v => (JsonNode)JsonValue.Create(v)).ToArray()),
            };
            if (FactorIsExplicit)
            {
                longRope["factor"] = Factor;
            }
            if (ExplicitAttentionFactor is { } attention)
            {
                longRope["attention_factor"] = attention;
            }
            return longRope;
        }
        var obj = new JsonObject { ["rope_type"] = Type, ["factor"] = Factor };
        if (Type == "llama3")
        {
            obj["low_freq_factor"] = LowFreqFactor;
            obj["high_freq_factor"] = HighFreqFactor;
            obj["original_max_position_embeddings"] = OriginalMaxPositionEmbeddings;
        }
        return obj;
    }

    /// <summary>The rotary inverse frequencies for the rotated part of one head, scaled as transformers' rope init functions do.</summary>
    /// <remarks>Computed in float32 like transformers' _compute_default_rope_parameters / _compute_llama3_parameters / _compute_longrope_parameters.</remarks>
    /// <param name="rotaryDim">The rotated dimensions per head (head_dim · partial_rotary_factor).</param>
    /// <param name="longFactors">LongRoPE only: use long_factor (sequence longer than the original context) instead of short_factor.</param>
    public static float[] InverseFrequencies(int rotaryDim, double theta, RopeScaling? scaling, bool longFactors = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rotaryDim);
        var inv = new float[rotaryDim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), exponent and power in float32.
            float exponent = (float)(2 * i) / rotaryDim;
            inv[i] = 1.0f / MathF.Pow((float)theta, exponent);
        }
        switch (scaling?.Type)
        {
            case null:
                return inv;
            case "linear":
                // transformers applies linear scaling to positions: t / factor, equivalent to inv_freq / factor.
                for (int i = 0; i < inv.Length; i++)
                {
                    inv[i] = (float)(inv[i] / scaling.Factor);
                }
                return inv;
            case "longrope":
                // transformers _compute_longrope_parameters: 1.0 / (ext_factors * base ** (arange(0, dim, 2) / dim)).
                var ext = longFactors ? scaling.LongFactor : scaling.ShortFactor;
                for (int i = 0; i < inv.Length; i++)
                {
                    float power = MathF.Pow((float)theta, (float)(2 * i) / rotaryDim);
                    inv[i] = 1.0f / ((float)ext[i] * power);
                }
                return inv;
            default:
                return Llama3(inv, scaling);
        }
    }

    // transformers modeling_rope_utils._compute_llama3_parameters.
    private static float[] Llama3(float[] inv, RopeScaling scaling)
    {
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

    private static double Require(JsonObject obj, string key, string type, string field) =>
        LlamaConfig.GetDouble(obj, field) ?? throw new InvalidDataException($"config.json {key} {type} has no {field}");

    private static double[] Factors(JsonObject obj, string key, string field)
    {
        if (obj[field] is not JsonArray array)
        {
            throw new InvalidDataException($"config.json {key} longrope has no {field} list");
        }
        var values = new double[array.Count];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = array[i] is JsonValue v && v.TryGetValue(out double d)
                ? d
                : throw new InvalidDataException($"config.json {key} {field}[{i}] is not a number");
        }
        return values;
    }
}
