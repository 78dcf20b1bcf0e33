using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Federated.Training.Lora;
using Federated.Training.SafeTensors;

namespace Federated.Training.Peft;

/// <summary>Reads and writes a Hugging Face PEFT LoRA folder: adapter_config.json + adapter_model.safetensors.</summary>
public static partial class PeftAdapter
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>Writes the model's current adapter (settings and tensors) as a PEFT folder.</summary>
    public static void Save(string directory, Model.LlamaForCausalLM model, string baseModelNameOrPath,
        SafeTensorDType dtype = SafeTensorDType.F32)
    {
        ArgumentNullException.ThrowIfNull(model);
        var settings = model.Lora ?? throw new InvalidOperationException("the model has no LoRA adapter to save");
        Save(directory, settings, model.GetAdapter(), baseModelNameOrPath, dtype);
    }

    /// <summary>Reads a PEFT folder and attaches it to a model that has no adapter yet; returns the settings it used.</summary>
    public static LoraSettings Apply(string directory, Model.LlamaForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var (settings, adapter, _) = Load(directory);
        Apply(settings, adapter, model);
        return settings;
    }

    /// <summary>Attaches an adapter read from bytes or a stream (<see cref="FromBytes"/>) to a model that has no adapter yet.</summary>
    public static void Apply(LoraSettings settings, AdapterTensors adapter, Model.LlamaForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(model);
        model.AddLora(settings);
        try
        {
            model.SetAdapter(adapter);
        }
        catch
        {
            model.RemoveLora();
            throw;
        }
    }

    /// <summary>Writes the folder so that <c>PeftModel.from_pretrained(base, dir)</c> loads it.</summary>
    public static void Save(string directory, LoraSettings settings, AdapterTensors adapter, string baseModelNameOrPath,
        SafeTensorDType dtype = SafeTensorDType.F32, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(baseModelNameOrPath);
        settings.Validate();
        Directory.CreateDirectory(directory);
        string weightsPath = Path.Combine(directory, WeightsFileName);
        // A temporary file and a move, so a crash never leaves a half-written adapter behind.
        using (var weights = new FileStream(weightsPath + ".tmp", FileMode.Create, FileAccess.Write))
        {
            WriteWeights(weights, adapter, dtype, metadata);
        }
        File.Move(weightsPath + ".tmp", weightsPath, overwrite: true);
        File.WriteAllText(Path.Combine(directory, ConfigFileName), ConfigJson(settings, baseModelNameOrPath));
    }

    /// <summary>The two files of a PEFT folder in memory: adapter_config.json text and adapter_model.safetensors bytes.</summary>
    public static (string ConfigJson, byte[] Weights) ToBytes(LoraSettings settings, AdapterTensors adapter, string baseModelNameOrPath,
        SafeTensorDType dtype = SafeTensorDType.F32, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(baseModelNameOrPath);
        settings.Validate();
        using var weights = new MemoryStream();
        WriteWeights(weights, adapter, dtype, metadata);
        return (ConfigJson(settings, baseModelNameOrPath), weights.ToArray());
    }

    /// <summary>Reads an adapter from its adapter_config.json text and adapter_model.safetensors bytes.</summary>
    public static (LoraSettings Settings, AdapterTensors Adapter, string BaseModelNameOrPath) FromBytes(string configJson,
        ReadOnlyMemory<byte> weights)
    {
        ArgumentNullException.ThrowIfNull(configJson);
        using var reader = new SafeTensorsReader(weights, WeightsFileName);
        return Read(configJson, reader);
    }

    /// <summary>Reads an adapter from its adapter_config.json text and a seekable adapter_model.safetensors stream (left open).</summary>
    public static (LoraSettings Settings, AdapterTensors Adapter, string BaseModelNameOrPath) FromStream(string configJson, Stream weights)
    {
        ArgumentNullException.ThrowIfNull(configJson);
        using var reader = new SafeTensorsReader(weights, WeightsFileName, leaveOpen: true);
        return Read(configJson, reader);
    }

    private static void WriteWeights(Stream stream, AdapterTensors adapter, SafeTensorDType dtype, IReadOnlyDictionary<string, string>? metadata)
    {
        foreach (string name in adapter.Names)
        {
            _ = ParseKey(name);
        }
        var tensors = adapter.Tensors.Select(t => (t.Name, t.ToTensor(), dtype)).ToList();
        try
        {
            var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal)
            {
                ["format"] = "pt",
            };
            SafeTensorsWriter.Write(stream, tensors, meta);
        }
        finally
        {
            foreach (var (_, tensor, _) in tensors)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>Reads the folder back: the LoRA settings (seed and FFA flag from our own fields, defaults otherwise) and the tensors.</summary>
    public static (LoraSettings Settings, AdapterTensors Adapter, string BaseModelNameOrPath) Load(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string configPath = Path.Combine(directory, ConfigFileName);
        string weightsPath = Path.Combine(directory, WeightsFileName);
        if (!File.Exists(configPath))
        {
            throw new FileNotFoundException($"adapter folder '{directory}' has no {ConfigFileName}", configPath);
        }
        if (!File.Exists(weightsPath))
        {
            throw new FileNotFoundException($"adapter folder '{directory}' has no {WeightsFileName}", weightsPath);
        }
        using var reader = new SafeTensorsReader(weightsPath);
        return Read(File.ReadAllText(configPath), reader);
    }

    private static (LoraSettings Settings, AdapterTensors Adapter, string BaseModelNameOrPath) Read(string configJson, SafeTensorsReader reader)
    {
        var (settings, baseModel) = ParseConfig(configJson);
        var tensors = new List<NamedTensor>();
        foreach (string name in reader.Names.Order(StringComparer.Ordinal))
        {
            var (_, module, isA) = ParseKey(name);
            if (!settings.Targets.Contains(module))
            {
                throw new InvalidDataException($"adapter tensor '{name}' targets '{module}', which is not in target_modules");
            }
            var info = reader.Info(name);
            int expectedRankDim = isA ? 0 : 1;
            if (info.Shape.Length != 2 || info.Shape[expectedRankDim] != settings.Rank)
            {
                throw new InvalidDataException(
                    $"adapter tensor '{name}' has shape [{string.Join(", ", info.Shape)}]; expected rank {settings.Rank} in dimension {expectedRankDim}");
            }
            using var tensor = reader.ReadFloat32(name);
            tensors.Add(NamedTensor.FromTensor(name, tensor));
        }
        return (settings, new AdapterTensors(tensors), baseModel);
    }

    /// <summary>The adapter_config.json text PEFT 0.1x writes for a LoRA on a causal LM.</summary>
    public static string ConfigJson(LoraSettings settings, string baseModelNameOrPath)
    {
        var root = new JsonObject
        {
            ["alpha_pattern"] = new JsonObject(),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = settings.Alpha,
            ["lora_dropout"] = settings.Dropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = settings.Rank,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = new JsonArray(settings.Targets.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray()),
            ["task_type"] = "CAUSAL_LM",
            ["use_dora"] = false,
            ["use_rslora"] = false,
            // PEFT ignores unknown keys on load; these let a client rebuild the same frozen A.
            ["federated_lora_init_seed"] = settings.InitSeed.ToString(CultureInfo.InvariantCulture),
            ["federated_freeze_a"] = settings.FreezeA,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    internal static (LoraSettings Settings, string BaseModel) ParseConfig(string json)
    {
        try
        {
            return ParseConfigCore(json);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException)
        {
            throw new InvalidDataException($"{ConfigFileName} has a field of the wrong type: {e.Message}", e);
        }
    }

    private static (LoraSettings Settings, string BaseModel) ParseConfigCore(string json)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException($"{ConfigFileName} is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{ConfigFileName} is not valid JSON: {e.Message}", e);
        }
        string peftType = root["peft_type"]?.GetValue<string>() ?? "";
        if (peftType != "LORA")
        {
            throw new InvalidDataException($"{ConfigFileName} peft_type is '{peftType}'; only LORA is supported");
        }
        if (root["use_dora"] is JsonValue dora && dora.GetValue<bool>() || root["use_rslora"] is JsonValue rs && rs.GetValue<bool>())
        {
            throw new InvalidDataException($"{ConfigFileName} uses DoRA or rsLoRA, which this trainer does not implement");
        }
        if (root["fan_in_fan_out"] is JsonValue fan && fan.GetValue<bool>())
        {
            throw new InvalidDataException($"{ConfigFileName} has fan_in_fan_out true; Llama projections are not transposed");
        }
        int rank = root["r"]?.GetValue<int>() ?? throw new InvalidDataException($"{ConfigFileName} has no r");
        double alpha = root["lora_alpha"]?.GetValue<double>() ?? rank;
        double dropout = root["lora_dropout"]?.GetValue<double>() ?? 0.0;
        List<string> targets = root["target_modules"] switch
        {
            JsonArray array => array.Select(t => t?.GetValue<string>() ?? "").ToList(),
            JsonValue single => [single.GetValue<string>()],
            _ => throw new InvalidDataException($"{ConfigFileName} has no target_modules list"),
        };
        long seed = 0;
        if (root["federated_lora_init_seed"] is JsonValue seedNode &&
            !long.TryParse(seedNode.GetValue<string>(), NumberStyles.Integer, CultureInfo.InvariantCulture, out seed))
        {
            throw new InvalidDataException($"{ConfigFileName} federated_lora_init_seed is not an integer");
        }
        bool freezeA = root["federated_freeze_a"] is JsonValue freezeNode ? freezeNode.GetValue<bool>() : false;
        var settings = new LoraSettings(rank, alpha, dropout, targets, seed, freezeA);
        try
        {
            settings.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new InvalidDataException($"{ConfigFileName}: {e.Message}", e);
        }
        return (settings, root["base_model_name_or_path"]?.GetValue<string>() ?? "");
    }

    /// <summary>Splits a PEFT key into layer index, projection name and whether it is lora_A.</summary>
    internal static (int Layer, string Module, bool IsA) ParseKey(string name)
    {
        var match = KeyPattern().Match(name);
        if (!match.Success)
        {
            throw new InvalidDataException(
                $"adapter tensor '{name}' is not a PEFT LoRA key (base_model.model.model.layers.N.(self_attn|mlp).X_proj.lora_(A|B).weight)");
        }
        return (int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), match.Groups[3].Value, match.Groups[4].Value == "A");
    }

    [GeneratedRegex(@"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)\.weight$")]
    private static partial Regex KeyPattern();
}
