using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;

namespace Federated.Training.SafeTensors;

/// <summary>The weights of a Hugging Face model folder: model.safetensors, or the shards listed by model.safetensors.index.json.</summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    private readonly List<SafeTensorsReader> _readers = [];
    private readonly Dictionary<string, SafeTensorsReader> _byName = new(StringComparer.Ordinal);

    private SafeTensorsCheckpoint()
    {
    }

    /// <summary>Tensor names across all shards.</summary>
    public IReadOnlyCollection<string> Names => _byName.Keys;

    /// <summary>Opens the single file or every shard of the index, checking that each indexed name is present in its shard.</summary>
    public static SafeTensorsCheckpoint Open(string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        var checkpoint = new SafeTensorsCheckpoint();
        try
        {
            string single = Path.Combine(modelDirectory, "model.safetensors");
            string index = Path.Combine(modelDirectory, "model.safetensors.index.json");
            if (File.Exists(single))
            {
                checkpoint.Add(new SafeTensorsReader(single), null);
            }
            else if (File.Exists(index))
            {
                checkpoint.OpenShards(modelDirectory, index);
            }
            else
            {
                throw new FileNotFoundException(
                    $"model folder '{modelDirectory}' has neither model.safetensors nor model.safetensors.index.json");
            }
            return checkpoint;
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafeTensorInfo Info(string name) => Reader(name).Info(name);

    /// <summary>Reads a tensor as float32 on the CPU.</summary>
    public torch.Tensor ReadFloat32(string name) => Reader(name).ReadFloat32(name);

    /// <summary>Reads a tensor into a new tensor of <paramref name="type"/> on <paramref name="device"/>.</summary>
    public torch.Tensor Read(string name, torch.ScalarType type, torch.Device? device = null) => Reader(name).Read(name, type, device);

    /// <summary>Fills a contiguous tensor of the same element count in slices (see <see cref="SafeTensorsReader.ReadInto"/>).</summary>
    public void ReadInto(string name, torch.Tensor destination) => Reader(name).ReadInto(name, destination);

    /// <summary>The shard file that holds a tensor (for error messages).</summary>
    public string FileOf(string name) => Reader(name).Path;

    public void Dispose()
    {
        foreach (var reader in _readers)
        {
            reader.Dispose();
        }
        _readers.Clear();
        _byName.Clear();
    }

    private SafeTensorsReader Reader(string name) =>
        _byName.TryGetValue(name, out var reader)
            ? reader
            : throw new KeyNotFoundException($"tensor '{name}' is missing from the checkpoint");

    private void OpenShards(string modelDirectory, string indexPath)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(indexPath)) as JsonObject
                ?? throw new InvalidDataException($"'{indexPath}' is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{indexPath}' is not valid JSON: {e.Message}", e);
        }
        if (root["weight_map"] is not JsonObject weightMap)
        {
            throw new InvalidDataException($"'{indexPath}' has no weight_map object");
        }
        var shards = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var (name, fileNode) in weightMap)
        {
            string file = fileNode?.GetValue<string>() ?? throw new InvalidDataException($"weight_map entry '{name}' is not a file name");
            // Shard names come from a downloaded file: refuse anything that could leave the model folder.
            if (file != Path.GetFileName(file) || file.Length == 0 || file.Contains(".."))
            {
                throw new InvalidDataException($"weight_map entry '{name}' names shard '{file}', which is not a plain file name");
            }
            if (!shards.TryGetValue(file, out var names))
            {
                shards[file] = names = [];
            }
            names.Add(name);
        }
        foreach (var (file, names) in shards.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            string shardPath = Path.Combine(modelDirectory, file);
            if (!File.Exists(shardPath))
            {
                throw new FileNotFoundException($"shard '{file}' listed in model.safetensors.index.json is missing", shardPath);
            }
            Add(new SafeTensorsReader(shardPath), names);
        }
    }

    private void Add(SafeTensorsReader reader, List<string>? expected)
    {
        _readers.Add(reader);
        if (expected is not null)
        {
            foreach (string name in expected)
            {
                if (!reader.Contains(name))
                {
                    throw new InvalidDataException($"tensor '{name}' is listed for shard '{reader.Path}' but is not in it");
                }
                _byName[name] = reader;
            }
            return;
        }
        foreach (string name in reader.Names)
        {
            _byName[name] = reader;
        }
    }
}
