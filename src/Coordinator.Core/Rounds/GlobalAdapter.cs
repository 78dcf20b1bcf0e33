using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using TorchSharp;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// The run's global LoRA adapter under FFA-LoRA (Sun et al. 2024): A is fixed by the seed in the settings and never
/// aggregated, B is the averaged part. Serialized as a PEFT adapter_model.safetensors file whose metadata carries the
/// adapter_config.json, so one signed blob is all a client needs besides its own copy of the base model.
/// </summary>
internal sealed class GlobalAdapter
{
    /// <summary>Safetensors metadata key holding the PEFT adapter_config.json text.</summary>
    public const string ConfigMetadataKey = "federated.adapter_config";

    private readonly string _baseModel;
    private AdapterTensors _tensors;

    private GlobalAdapter(LoraSettings settings, AdapterTensors tensors, string baseModel)
    {
        Settings = settings;
        _tensors = tensors;
        _baseModel = baseModel;
    }

    public LoraSettings Settings { get; }

    /// <summary>Length d of the aggregated vector: every lora_B element.</summary>
    public int BDimension => checked((int)_tensors.OnlyB().ElementCount);

    /// <summary>The lora_B values flattened in ordinal name order (the layout clients flatten their deltas in).</summary>
    public float[] FlatB() => _tensors.OnlyB().Flatten();

    /// <summary>A fresh adapter for the base model's layers: A from the settings' seed, B zero (PEFT's init).</summary>
    public static GlobalAdapter Create(string baseModelDirectory, LoraSettings settings)
    {
        ArgumentException.ThrowIfNullOrEmpty(baseModelDirectory);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        using LlamaForCausalLM model = LlamaForCausalLM.FromPretrained(baseModelDirectory, torch.CPU);
        model.AddLora(settings);
        // The model's settings keep only the targets its family has (PEFT's matching), so target_modules is exact.
        return new GlobalAdapter(model.Lora!, model.GetAdapter(), Path.GetFileName(Path.TrimEndingDirectorySeparator(baseModelDirectory)));
    }

    /// <summary>
    /// Reads back what <see cref="Serialize"/> wrote (a coordinator that restarts resumes a run from its last released
    /// adapter): the PEFT config from the safetensors metadata, then A and B.
    /// </summary>
    public static GlobalAdapter Deserialize(byte[] content)
    {
        ArgumentNullException.ThrowIfNull(content);
        string directory = Path.Combine(Path.GetTempPath(), "federated-adapter-" + Guid.NewGuid().ToString("N"));
        try
        {
            Directory.CreateDirectory(directory);
            string weights = Path.Combine(directory, PeftAdapter.WeightsFileName);
            File.WriteAllBytes(weights, content);
            using (var reader = new Training.SafeTensors.SafeTensorsReader(weights))
            {
                if (!reader.Metadata.TryGetValue(ConfigMetadataKey, out string? config) || config.Length is 0 or > 1 << 16)
                {
                    throw new InvalidDataException($"the stored adapter carries no '{ConfigMetadataKey}' metadata of 1..65536 characters");
                }
                File.WriteAllText(Path.Combine(directory, PeftAdapter.ConfigFileName), config);
            }
            (LoraSettings settings, AdapterTensors tensors, string baseModel) = PeftAdapter.Load(directory);
            return new GlobalAdapter(settings, tensors, baseModel);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>Adds the decoded mean update to B (A untouched).</summary>
    public void ApplyMeanUpdate(ReadOnlySpan<float> meanB)
    {
        AdapterTensors b = _tensors.OnlyB();
        if (meanB.Length != b.ElementCount)
        {
            throw new ArgumentException($"mean update has {meanB.Length} values; lora_B has {b.ElementCount}", nameof(meanB));
        }
        AdapterTensors newB = b.Add(b.Unflatten(meanB));
        AdapterTensors a = _tensors.Select(_tensors.Names.Where(n => !newB.Contains(n)));
        _tensors = new AdapterTensors(a.Tensors.Concat(newB.Tensors));
    }

    /// <summary>The adapter as safetensors bytes with the PEFT config in its metadata.</summary>
    public byte[] Serialize()
    {
        string directory = Path.Combine(Path.GetTempPath(), "federated-adapter-" + Guid.NewGuid().ToString("N"));
        try
        {
            PeftAdapter.Save(directory, Settings, _tensors, _baseModel);
            string config = File.ReadAllText(Path.Combine(directory, PeftAdapter.ConfigFileName));
            PeftAdapter.Save(directory, Settings, _tensors, _baseModel, metadata: new Dictionary<string, string> { [ConfigMetadataKey] = config });
            return File.ReadAllBytes(Path.Combine(directory, PeftAdapter.WeightsFileName));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
