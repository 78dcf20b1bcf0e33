using Federated.Training.Lora;
using Federated.Training.Peft;

namespace Federated.EdgeClient.Rounds;

/// <summary>
/// Reads the coordinator's global adapter blob: a PEFT adapter_model.safetensors whose metadata key
/// "federated.adapter_config" holds the adapter_config.json (written by the coordinator's GlobalAdapter).
/// </summary>
internal static class GlobalAdapterFile
{
    public const string ConfigMetadataKey = "federated.adapter_config";

    /// <summary>Materializes the blob as a PEFT folder (for PeftAdapter.Apply) and returns its settings and tensors.</summary>
    public static (LoraSettings Settings, AdapterTensors Adapter) WriteFolder(byte[] content, string directory)
    {
        ArgumentNullException.ThrowIfNull(content);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        string weights = Path.Combine(directory, PeftAdapter.WeightsFileName);
        File.WriteAllBytes(weights, content);
        string config;
        using (var reader = new Training.SafeTensors.SafeTensorsReader(weights))
        {
            if (!reader.Metadata.TryGetValue(ConfigMetadataKey, out string? value) || value.Length is 0 or > 1 << 16)
            {
                throw new InvalidDataException($"the global adapter carries no '{ConfigMetadataKey}' metadata of 1..65536 characters");
            }
            config = value;
        }
        File.WriteAllText(Path.Combine(directory, PeftAdapter.ConfigFileName), config);
        var (settings, adapter, _) = PeftAdapter.Load(directory);
        return (settings, adapter);
    }
}
