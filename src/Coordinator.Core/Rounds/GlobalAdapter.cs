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
    // PEFT's name prefix of every adapter tensor (as LlamaForCausalLM.GetAdapter names them).
    private const string PeftPrefix = "base_model.model.";

    private readonly string _baseModel;
    private AdapterTensors _tensors;

    private GlobalAdapter(LoraSettings settings, AdapterTensors tensors, string baseModel)
    {
        Settings = settings;
        _tensors = tensors;
        _baseModel = baseModel;
    }

    public LoraSettings Settings { get; }

    /// <summary>A and B of every targeted projection under their PEFT names.</summary>
    public AdapterTensors Tensors => _tensors;

    /// <summary>Length d of the aggregated vector: every lora_B element.</summary>
    public int BDimension => checked((int)_tensors.OnlyB().ElementCount);

    /// <summary>The lora_B values flattened in ordinal name order (the layout clients flatten their deltas in).</summary>
    public float[] FlatB() => _tensors.OnlyB().Flatten();

    /// <summary>
    /// A fresh adapter for the base model's layers, from its config.json alone (the weights are never loaded): A from the
    /// settings' seed exactly as <see cref="LlamaForCausalLM.AddLora"/> draws it, B zero (PEFT's init).
    /// </summary>
    public static GlobalAdapter Create(string baseModelDirectory, LoraSettings settings)
    {
        ArgumentException.ThrowIfNullOrEmpty(baseModelDirectory);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        LlamaConfig config = LlamaConfig.Load(baseModelDirectory);
        var tensors = new List<NamedTensor>();
        foreach (LoraProjection projection in LoraShapes.Projections(config, settings.Targets))
        {
            string prefix = PeftPrefix + projection.ModulePath;
            using (torch.Tensor a = LoraInit.KaimingUniformA(settings.Rank, projection.InFeatures, settings.InitSeed, projection.ModulePath))
            {
                tensors.Add(NamedTensor.FromTensor(prefix + ".lora_A.weight", a));
            }
            tensors.Add(new NamedTensor(prefix + ".lora_B.weight", [projection.OutFeatures, settings.Rank], new float[checked(projection.OutFeatures * settings.Rank)]));
        }
        return new GlobalAdapter(settings, new AdapterTensors(tensors), Path.GetFileName(Path.TrimEndingDirectorySeparator(baseModelDirectory)));
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
