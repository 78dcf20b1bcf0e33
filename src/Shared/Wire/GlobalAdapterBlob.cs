using Federated.Training.Lora;
using Federated.Training.Peft;
using Federated.Training.SafeTensors;

namespace Federated.Wire;

/// <summary>A global adapter as read back from its blob: the LoRA settings, the A and B tensors and the base model it names.</summary>
public sealed record GlobalAdapterContent(LoraSettings Settings, AdapterTensors Tensors, string BaseModel);

/// <summary>
/// The one format of the global adapter that the coordinator stores, signs and serves and that clients load: a PEFT
/// adapter_model.safetensors whose metadata key "federated.adapter_config" carries the adapter_config.json, so one
/// signed blob is all a client needs besides its own copy of the base model. Read and written in memory, never
/// through a temporary folder.
/// </summary>
public static class GlobalAdapterBlob
{
    /// <summary>Safetensors metadata key holding the PEFT adapter_config.json text.</summary>
    public const string ConfigMetadataKey = "federated.adapter_config";

    /// <summary>Longest adapter_config.json accepted from a blob.</summary>
    public const int MaxConfigCharacters = 1 << 16;

    /// <summary>The blob of an adapter (float32 tensors, the config in the metadata).</summary>
    public static byte[] Write(LoraSettings settings, AdapterTensors tensors, string baseModel)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(baseModel);
        string config = PeftAdapter.ConfigJson(settings, baseModel);
        return PeftAdapter.ToBytes(settings, tensors, baseModel, metadata: new Dictionary<string, string> { [ConfigMetadataKey] = config }).Weights;
    }

    /// <summary>Reads a blob back: the config from its metadata, then the tensors checked against it.</summary>
    /// <exception cref="InvalidDataException">Not a safetensors file, no config, or tensors the config does not describe.</exception>
    public static GlobalAdapterContent Read(ReadOnlyMemory<byte> content)
    {
        string config;
        using (var reader = new SafeTensorsReader(content, PeftAdapter.WeightsFileName))
        {
            config = Config(reader);
        }
        (LoraSettings settings, AdapterTensors tensors, string baseModel) = PeftAdapter.FromBytes(config, content);
        return new GlobalAdapterContent(settings, tensors, baseModel);
    }

    /// <summary>The adapter_config.json text a blob carries.</summary>
    /// <exception cref="InvalidDataException">The metadata lacks it or it is empty or too long.</exception>
    public static string Config(SafeTensorsReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        if (!reader.Metadata.TryGetValue(ConfigMetadataKey, out string? config) || config.Length is 0 or > MaxConfigCharacters)
        {
            throw new InvalidDataException($"the global adapter carries no '{ConfigMetadataKey}' metadata of 1..{MaxConfigCharacters} characters");
        }
        return config;
    }
}
