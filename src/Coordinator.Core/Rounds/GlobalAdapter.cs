using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Wire;
using TorchSharp;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// The run's global LoRA adapter under FFA-LoRA (Sun et al. 2024): A is fixed by the seed in the settings and never
/// aggregated, B is the averaged part. Serialized as the one global adapter blob that clients load (<see cref="GlobalAdapterBlob"/>).
/// </summary>
internal sealed class GlobalAdapter
{
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
        return new GlobalAdapter(settings, model.GetAdapter(), Path.GetFileName(Path.TrimEndingDirectorySeparator(baseModelDirectory)));
    }

    /// <summary>
    /// Reads back what <see cref="Serialize"/> wrote (a coordinator that restarts resumes a run from its last released
    /// adapter).
    /// </summary>
    public static GlobalAdapter Deserialize(byte[] content)
    {
        ArgumentNullException.ThrowIfNull(content);
        GlobalAdapterContent read = GlobalAdapterBlob.Read(content);
        return new GlobalAdapter(read.Settings, read.Tensors, read.BaseModel);
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

    /// <summary>The adapter as its blob (<see cref="GlobalAdapterBlob"/>).</summary>
    public byte[] Serialize() => GlobalAdapterBlob.Write(Settings, _tensors, _baseModel);
}
