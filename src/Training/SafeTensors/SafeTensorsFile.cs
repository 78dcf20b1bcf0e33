using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.SafeTensors;

/// <summary>Element types of the safetensors format (the header's "dtype" strings).</summary>
public enum SafeTensorDType
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    BOOL,
}

/// <summary>One tensor entry of a safetensors header: dtype, shape and byte range in the data section.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorDType DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>A read-only, memory-mapped safetensors file (https://github.com/huggingface/safetensors format).</summary>
public sealed class SafeTensorsReader : IDisposable
{
    // A header this large is no model's; bounding it stops a hostile file from making us allocate gigabytes.
    private const long MaxHeaderBytes = 100L * 1024 * 1024;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;

    /// <summary>Opens and validates a safetensors file; every offset is checked against the file size.</summary>
    public SafeTensorsReader(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        Path = path;
        long length = new FileInfo(path).Length;
        if (length < 8)
        {
            throw new InvalidDataException($"safetensors file '{path}' is {length} bytes; the 8-byte header length is missing");
        }
        // A zero-length map is an error in .NET, and the file is at least 8 bytes here.
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        try
        {
            ulong headerLength = _view.ReadUInt64(0);
            if (headerLength > (ulong)MaxHeaderBytes || 8 + (long)headerLength > length)
            {
                throw new InvalidDataException($"safetensors file '{path}' declares a header of {headerLength} bytes; file has {length}");
            }
            var headerBytes = new byte[headerLength];
            _view.ReadArray(8, headerBytes, 0, headerBytes.Length);
            _dataStart = 8 + (long)headerLength;
            try
            {
                (_tensors, Metadata) = ParseHeader(headerBytes, length - _dataStart, path);
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException)
            {
                throw new InvalidDataException($"safetensors header of '{path}' has a field of the wrong type: {e.Message}", e);
            }
        }
        catch
        {
            _view.Dispose();
            _map.Dispose();
            throw;
        }
    }

    public string Path { get; }

    /// <summary>The optional string-to-string __metadata__ of the header.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public IReadOnlyCollection<string> Names => _tensors.Keys;

    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>Reads a tensor as float32 on the CPU, converting from F16, BF16, F64 or integer types.</summary>
    public Tensor ReadFloat32(string name)
    {
        SafeTensorInfo info = Info(name);
        float[] values = DecodeToFloat(info);
        return torch.tensor(values, info.Shape, ScalarType.Float32);
    }

    /// <summary>Reads a tensor in its stored element type (F16 and BF16 included) on the CPU.</summary>
    public Tensor Read(string name)
    {
        SafeTensorInfo info = Info(name);
        switch (info.DType)
        {
            case SafeTensorDType.I64:
                return torch.tensor(ReadRaw<long>(info), info.Shape, ScalarType.Int64);
            case SafeTensorDType.I32:
                return torch.tensor(ReadRaw<int>(info), info.Shape, ScalarType.Int32);
            case SafeTensorDType.F64:
                return torch.tensor(ReadRaw<double>(info), info.Shape, ScalarType.Float64);
            case SafeTensorDType.F16:
                using (var f = ReadFloat32(name))
                {
                    return f.to_type(ScalarType.Float16); // exact: every f16 is a float32
                }
            case SafeTensorDType.BF16:
                using (var f = ReadFloat32(name))
                {
                    return f.to_type(ScalarType.BFloat16); // exact: every bf16 is a float32
                }
            default:
                return ReadFloat32(name);
        }
    }

    public SafeTensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var info)
            ? info
            : throw new KeyNotFoundException($"tensor '{name}' is not in safetensors file '{Path}'");

    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }

    private T[] ReadRaw<T>(SafeTensorInfo info)
        where T : struct
    {
        var values = new T[checked((int)info.ElementCount)];
        _view.ReadArray(_dataStart + info.Begin, values, 0, values.Length);
        return values;
    }

    private float[] DecodeToFloat(SafeTensorInfo info)
    {
        int count = checked((int)info.ElementCount);
        var result = new float[count];
        switch (info.DType)
        {
            case SafeTensorDType.F32:
                _view.ReadArray(_dataStart + info.Begin, result, 0, count);
                break;
            case SafeTensorDType.BF16:
            {
                ushort[] raw = ReadRaw<ushort>(info);
                Span<uint> bits = MemoryMarshal.Cast<float, uint>(result.AsSpan());
                for (int i = 0; i < count; i++)
                {
                    bits[i] = (uint)raw[i] << 16;
                }
                break;
            }
            case SafeTensorDType.F16:
            {
                Half[] raw = ReadRaw<Half>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = (float)raw[i];
                }
                break;
            }
            case SafeTensorDType.F64:
            {
                double[] raw = ReadRaw<double>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = (float)raw[i];
                }
                break;
            }
            case SafeTensorDType.I64:
            {
                long[] raw = ReadRaw<long>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = raw[i];
                }
                break;
            }
            case SafeTensorDType.I32:
            {
                int[] raw = ReadRaw<int>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = raw[i];
                }
                break;
            }
            case SafeTensorDType.I16:
            {
                short[] raw = ReadRaw<short>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = raw[i];
                }
                break;
            }
            case SafeTensorDType.I8:
            {
                sbyte[] raw = ReadRaw<sbyte>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = raw[i];
                }
                break;
            }
            case SafeTensorDType.U8:
            case SafeTensorDType.BOOL:
            {
                byte[] raw = ReadRaw<byte>(info);
                for (int i = 0; i < count; i++)
                {
                    result[i] = raw[i];
                }
                break;
            }
        }
        return result;
    }

    private static (Dictionary<string, SafeTensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(
        byte[] headerBytes, long dataLength, string path)
    {
        JsonObject header;
        try
        {
            header = JsonNode.Parse(headerBytes) as JsonObject
                ?? throw new InvalidDataException($"safetensors header of '{path}' is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"safetensors header of '{path}' is not valid JSON: {e.Message}", e);
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
                            : throw new InvalidDataException($"safetensors __metadata__ value '{k}' in '{path}' is not a string");
                    }
                }
                continue;
            }
            if (node is not JsonObject entry)
            {
                throw new InvalidDataException($"safetensors entry '{name}' in '{path}' is not an object");
            }
            string dtypeText = entry["dtype"]?.GetValue<string>() ?? throw new InvalidDataException($"tensor '{name}' in '{path}' has no dtype");
            if (!Enum.TryParse(dtypeText, ignoreCase: false, out SafeTensorDType dtype) || !Enum.IsDefined(dtype))
            {
                throw new InvalidDataException($"tensor '{name}' in '{path}' has unsupported dtype '{dtypeText}'");
            }
            if (entry["shape"] is not JsonArray shapeNode || entry["data_offsets"] is not JsonArray offsets || offsets.Count != 2)
            {
                throw new InvalidDataException($"tensor '{name}' in '{path}' needs a shape array and two data_offsets");
            }
            long[] shape = shapeNode.Select(d => d?.GetValue<long>() ?? -1).ToArray();
            if (shape.Any(d => d < 0))
            {
                throw new InvalidDataException($"tensor '{name}' in '{path}' has a negative dimension");
            }
            long begin = offsets[0]!.GetValue<long>();
            long end = offsets[1]!.GetValue<long>();
            var info = new SafeTensorInfo(name, dtype, shape, begin, end);
            long expected;
            try
            {
                expected = checked(info.ElementCount * SafeTensorsWriter.ElementSize(dtype));
            }
            catch (OverflowException)
            {
                throw new InvalidDataException($"tensor '{name}' in '{path}' has an impossible shape");
            }
            if (begin < 0 || end < begin || end > dataLength || end - begin != expected)
            {
                throw new InvalidDataException(
                    $"tensor '{name}' in '{path}' has data_offsets [{begin}, {end}] that do not fit its shape ({expected} bytes) within the {dataLength}-byte data section");
            }
            tensors[name] = info;
        }
        // The format requires the byte ranges to tile the data section without overlap.
        long cursor = 0;
        foreach (var info in tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (info.Begin < cursor)
            {
                throw new InvalidDataException($"tensor '{info.Name}' in '{path}' overlaps another tensor's bytes");
            }
            cursor = info.End;
        }
        return (tensors, metadata);
    }
}

/// <summary>Writes safetensors files: 8-byte little-endian header length, JSON header padded with spaces to 8 bytes, data.</summary>
public static class SafeTensorsWriter
{
    /// <summary>Writes the tensors (converted to each entry's dtype) in ordinal name order.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor, SafeTensorDType DType)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var entries = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
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
        foreach (var (name, tensor, dtype) in entries)
        {
            if (name == "__metadata__" || !seen.Add(name))
            {
                throw new ArgumentException($"tensor name '{name}' is reserved or repeated", nameof(tensors));
            }
            long bytes = tensor.numel() * ElementSize(dtype);
            header[name] = new JsonObject
            {
                ["dtype"] = dtype.ToString(),
                ["shape"] = new JsonArray(tensor.shape.Select(d => (JsonNode)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        string? directory = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        // Write to a temporary file and move it, so a crash never leaves a half-written model behind.
        string temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            Span<byte> lengthBytes = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(lengthBytes, (ulong)padded);
            stream.Write(lengthBytes);
            stream.Write(json);
            for (int i = json.Length; i < padded; i++)
            {
                stream.WriteByte((byte)' ');
            }
            foreach (var (_, tensor, dtype) in entries)
            {
                stream.Write(Encode(tensor, dtype));
            }
        }
        File.Move(temp, path, overwrite: true);
    }

    public static int ElementSize(SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F64 or SafeTensorDType.I64 => 8,
        SafeTensorDType.F32 or SafeTensorDType.I32 => 4,
        SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.I16 => 2,
        _ => 1,
    };

    private static byte[] Encode(Tensor tensor, SafeTensorDType dtype)
    {
        using var scope = torch.NewDisposeScope();
        Tensor cpu = tensor.detach().cpu().contiguous();
        switch (dtype)
        {
            case SafeTensorDType.F32:
                return MemoryMarshal.AsBytes(cpu.to_type(ScalarType.Float32).data<float>().ToArray().AsSpan()).ToArray();
            case SafeTensorDType.F64:
                return MemoryMarshal.AsBytes(cpu.to_type(ScalarType.Float64).data<double>().ToArray().AsSpan()).ToArray();
            case SafeTensorDType.I64:
                return MemoryMarshal.AsBytes(cpu.to_type(ScalarType.Int64).data<long>().ToArray().AsSpan()).ToArray();
            case SafeTensorDType.I32:
                return MemoryMarshal.AsBytes(cpu.to_type(ScalarType.Int32).data<int>().ToArray().AsSpan()).ToArray();
            case SafeTensorDType.I16:
                return MemoryMarshal.AsBytes(cpu.to_type(ScalarType.Int16).data<short>().ToArray().AsSpan()).ToArray();
            case SafeTensorDType.I8:
                return MemoryMarshal.AsBytes(cpu.to_type(ScalarType.Int8).data<sbyte>().ToArray().AsSpan()).ToArray();
            case SafeTensorDType.U8:
                return cpu.to_type(ScalarType.Byte).data<byte>().ToArray();
            case SafeTensorDType.BOOL:
                return cpu.to_type(ScalarType.Bool).to_type(ScalarType.Byte).data<byte>().ToArray();
            case SafeTensorDType.F16:
            {
                float[] values = cpu.to_type(ScalarType.Float32).data<float>().ToArray();
                var half = new Half[values.Length];
                for (int i = 0; i < values.Length; i++)
                {
                    half[i] = (Half)values[i]; // round to nearest even, as torch's .half()
                }
                return MemoryMarshal.AsBytes(half.AsSpan()).ToArray();
            }
            case SafeTensorDType.BF16:
            {
                float[] values = cpu.to_type(ScalarType.Float32).data<float>().ToArray();
                var bf = new ushort[values.Length];
                for (int i = 0; i < values.Length; i++)
                {
                    bf[i] = ToBFloat16(values[i]);
                }
                return MemoryMarshal.AsBytes(bf.AsSpan()).ToArray();
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unsupported safetensors dtype");
        }
    }

    /// <summary>float32 to bfloat16 with round-to-nearest-even, NaN kept a quiet NaN (as c10::BFloat16).</summary>
    internal static ushort ToBFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            return 0x7FC0;
        }
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    /// <summary>The safetensors dtype for a TorchSharp element type.</summary>
    public static SafeTensorDType DTypeOf(ScalarType type) => type switch
    {
        ScalarType.Float32 => SafeTensorDType.F32,
        ScalarType.Float16 => SafeTensorDType.F16,
        ScalarType.BFloat16 => SafeTensorDType.BF16,
        ScalarType.Float64 => SafeTensorDType.F64,
        ScalarType.Int64 => SafeTensorDType.I64,
        ScalarType.Int32 => SafeTensorDType.I32,
        ScalarType.Int16 => SafeTensorDType.I16,
        ScalarType.Int8 => SafeTensorDType.I8,
        ScalarType.Byte => SafeTensorDType.U8,
        ScalarType.Bool => SafeTensorDType.BOOL,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "no safetensors dtype for this element type"),
    };

    /// <summary>The safetensors dtype named by a config.json torch_dtype ("float32", "bfloat16", "float16").</summary>
    public static SafeTensorDType FromTorchDtypeName(string name) => name switch
    {
        "float32" or "float" => SafeTensorDType.F32,
        "bfloat16" => SafeTensorDType.BF16,
        "float16" or "half" => SafeTensorDType.F16,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "torch_dtype must be float32, bfloat16 or float16"),
    };
}
