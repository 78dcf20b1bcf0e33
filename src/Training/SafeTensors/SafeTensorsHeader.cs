using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Federated.Training.SafeTensors;

/// <summary>The safetensors header: 8-byte little-endian length, then a JSON object padded with spaces to 8 bytes.</summary>
internal static class SafeTensorsHeader
{
    // A header this large is no model's; bounding it stops a hostile file from making us allocate gigabytes.
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    /// <summary>Parses and checks the JSON header; every byte range must lie in the data section and none may overlap.</summary>
    public static (Dictionary<string, SafeTensorInfo> Tensors, IReadOnlyDictionary<string, string> Metadata) Parse(
        byte[] headerBytes, long dataLength, string source)
    {
        try
        {
            return ParseCore(headerBytes, dataLength, source);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException)
        {
            throw new InvalidDataException($"safetensors header of '{source}' has a field of the wrong type: {e.Message}", e);
        }
    }

    /// <summary>The header bytes (length prefix included) for tensors laid out back to back in the given order.</summary>
    public static byte[] Build(IReadOnlyList<(string Name, SafeTensorDType DType, long[] Shape)> entries,
        IReadOnlyDictionary<string, string>? metadata)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (k, v) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                meta[k] = v;
            }
            header["__metadata__"] = meta;
        }
        long offset = 0;
        foreach (var (name, dtype, shape) in entries)
        {
            if (name == "__metadata__" || !seen.Add(name))
            {
                throw new ArgumentException($"tensor name '{name}' is reserved or repeated", nameof(entries));
            }
            long bytes = shape.Aggregate(1L, (a, b) => checked(a * b)) * SafeTensorDTypes.ElementSize(dtype);
            header[name] = new JsonObject
            {
                ["dtype"] = dtype.ToString(),
                ["shape"] = new JsonArray(shape.Select(d => (JsonNode)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        var result = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)padded);
        json.CopyTo(result, 8);
        result.AsSpan(8 + json.Length).Fill((byte)' ');
        return result;
    }

    private static (Dictionary<string, SafeTensorInfo>, IReadOnlyDictionary<string, string>) ParseCore(
        byte[] headerBytes, long dataLength, string source)
    {
        JsonObject header;
        try
        {
            header = JsonNode.Parse(headerBytes) as JsonObject
                ?? throw new InvalidDataException($"safetensors header of '{source}' is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"safetensors header of '{source}' is not valid JSON: {e.Message}", e);
        }
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                if (node is JsonObject meta)
                {
                    foreach (var (k, v) in meta)
                    {
                        metadata[k] = v is JsonValue sv && sv.TryGetValue(out string? s)
                            ? s
                            : throw new InvalidDataException($"safetensors __metadata__ value '{k}' in '{source}' is not a string");
                    }
                }
                continue;
            }
            tensors[name] = ParseEntry(name, node, dataLength, source);
        }
        // The format requires the byte ranges to tile the data section without overlap.
        long cursor = 0;
        foreach (var info in tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (info.Begin < cursor)
            {
                throw new InvalidDataException($"tensor '{info.Name}' in '{source}' overlaps another tensor's bytes");
            }
            cursor = info.End;
        }
        return (tensors, metadata);
    }

    private static SafeTensorInfo ParseEntry(string name, JsonNode? node, long dataLength, string source)
    {
        if (node is not JsonObject entry)
        {
            throw new InvalidDataException($"safetensors entry '{name}' in '{source}' is not an object");
        }
        string dtypeText = entry["dtype"]?.GetValue<string>() ?? throw new InvalidDataException($"tensor '{name}' in '{source}' has no dtype");
        if (!Enum.TryParse(dtypeText, ignoreCase: false, out SafeTensorDType dtype) || !Enum.IsDefined(dtype) || dtypeText != dtype.ToString())
        {
            throw new InvalidDataException($"tensor '{name}' in '{source}' has unsupported dtype '{dtypeText}'");
        }
        if (entry["shape"] is not JsonArray shapeNode || entry["data_offsets"] is not JsonArray offsets || offsets.Count != 2)
        {
            throw new InvalidDataException($"tensor '{name}' in '{source}' needs a shape array and two data_offsets");
        }
        long[] shape = shapeNode.Select(d => d?.GetValue<long>() ?? -1).ToArray();
        if (shape.Any(d => d < 0))
        {
            throw new InvalidDataException($"tensor '{name}' in '{source}' has a negative dimension");
        }
        long begin = offsets[0]!.GetValue<long>();
        long end = offsets[1]!.GetValue<long>();
        var info = new SafeTensorInfo(name, dtype, shape, begin, end);
        long expected;
        try
        {
            expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * SafeTensorDTypes.ElementSize(dtype));
        }
        catch (OverflowException)
        {
            throw new InvalidDataException($"tensor '{name}' in '{source}' has an impossible shape");
        }
        if (begin < 0 || end < begin || end > dataLength || end - begin != expected)
        {
            throw new InvalidDataException(
                $"tensor '{name}' in '{source}' has data_offsets [{begin}, {end}] that do not fit its shape ({expected} bytes) within the {dataLength}-byte data section");
        }
        return info;
    }
}
