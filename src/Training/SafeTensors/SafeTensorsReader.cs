using System.Buffers.Binary;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.SafeTensors;

/// <summary>A read-only safetensors file, stream or buffer (https://github.com/huggingface/safetensors format).</summary>
/// <remarks>
/// Tensors are read in slices straight into their destination: a tensor in its stored element type costs no
/// intermediate copy, and a converted one only a bounded staging slice, so loading a model never holds the file twice.
/// </remarks>
public sealed class SafeTensorsReader : IDisposable
{
    // Bounds the staging slice of a converting read and keeps each span well inside int range.
    private const long SliceBytes = 16L * 1024 * 1024;

    private readonly SafeTensorsSource _source;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;

    /// <summary>Opens and validates a safetensors file; every offset is checked against the file size.</summary>
    public SafeTensorsReader(string path)
        : this(OpenFile(path), path)
    {
    }

    /// <summary>Reads a safetensors image from a seekable stream, which the reader disposes unless <paramref name="leaveOpen"/>.</summary>
    public SafeTensorsReader(Stream stream, string name = "stream", bool leaveOpen = false)
        : this(WrapStream(stream, leaveOpen), name)
    {
    }

    /// <summary>Reads a safetensors image held in memory; the buffer must not change while the reader is used.</summary>
    public SafeTensorsReader(ReadOnlyMemory<byte> bytes, string name = "bytes")
        : this(new MemorySource(bytes), name)
    {
    }

    private SafeTensorsReader(SafeTensorsSource source, string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        _source = source;
        Path = name;
        try
        {
            long length = source.Length;
            if (length < 8)
            {
                throw new InvalidDataException($"safetensors file '{name}' is {length} bytes; the 8-byte header length is missing");
            }
            Span<byte> prefix = stackalloc byte[8];
            source.ReadExactly(0, prefix);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > (ulong)SafeTensorsHeader.MaxHeaderBytes || 8 + (long)headerLength > length)
            {
                throw new InvalidDataException($"safetensors file '{name}' declares a header of {headerLength} bytes; file has {length}");
            }
            var headerBytes = new byte[headerLength];
            source.ReadExactly(8, headerBytes);
            _dataStart = 8 + (long)headerLength;
            (_tensors, Metadata) = SafeTensorsHeader.Parse(headerBytes, length - _dataStart, name);
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    /// <summary>The file path, or the name given for a stream or buffer (used in error messages).</summary>
    public string Path { get; }

    /// <summary>The optional string-to-string __metadata__ of the header.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public IReadOnlyCollection<string> Names => _tensors.Keys;

    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public SafeTensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var info)
            ? info
            : throw new KeyNotFoundException($"tensor '{name}' is not in safetensors file '{Path}'");

    /// <summary>Reads a tensor as float32 on the CPU, converting from F16, BF16, F64 or integer types.</summary>
    public Tensor ReadFloat32(string name) => Read(name, ScalarType.Float32);

    /// <summary>Reads a tensor in its stored element type (F16 and BF16 included) on the CPU.</summary>
    public Tensor Read(string name) => Read(name, SafeTensorDTypes.ToScalarType(Info(name).DType));

    /// <summary>Reads a tensor into a new tensor of <paramref name="type"/> on <paramref name="device"/> (the CPU by default).</summary>
    public Tensor Read(string name, ScalarType type, Device? device = null)
    {
        SafeTensorInfo info = Info(name);
        Tensor result = torch.empty(info.Shape, type, device ?? torch.CPU);
        try
        {
            ReadInto(name, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Fills a contiguous tensor with as many elements as the stored one, converting the element type as torch's copy_
    /// does (round to nearest even for narrower floats). Same type on the CPU: the bytes go straight into its storage.
    /// </summary>
    public void ReadInto(string name, Tensor destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        SafeTensorInfo info = Info(name);
        if (destination.numel() != info.ElementCount || !destination.is_contiguous())
        {
            throw new ArgumentException(
                $"tensor '{name}' has {info.ElementCount} elements; the destination must be contiguous with as many (has {destination.numel()})",
                nameof(destination));
        }
        ScalarType stored = SafeTensorDTypes.ToScalarType(info.DType);
        if (destination.dtype != stored && !SafeTensorDTypes.IsFloatingPoint(SafeTensorDTypes.FromScalarType(destination.dtype)))
        {
            throw new ArgumentException($"tensor '{name}' is {info.DType}; it can be read as its own type or a float type, not {destination.dtype}",
                nameof(destination));
        }
        using var noGrad = torch.no_grad();
        using Tensor flat = destination.view(-1);
        int elementSize = SafeTensorDTypes.ElementSize(info.DType);
        long sliceElements = Math.Max(1, SliceBytes / elementSize);
        if (destination.dtype == stored && destination.device_type == DeviceType.CPU)
        {
            for (long start = 0; start < info.ElementCount; start += sliceElements)
            {
                long count = Math.Min(sliceElements, info.ElementCount - start);
                using Tensor slice = flat.narrow(0, start, count);
                _source.ReadExactly(_dataStart + info.Begin + start * elementSize, slice.bytes);
            }
            return;
        }
        using Tensor staging = torch.empty(Math.Min(sliceElements, Math.Max(1, info.ElementCount)), stored);
        for (long start = 0; start < info.ElementCount; start += sliceElements)
        {
            long count = Math.Min(sliceElements, info.ElementCount - start);
            using Tensor part = staging.narrow(0, 0, count);
            _source.ReadExactly(_dataStart + info.Begin + start * elementSize, part.bytes);
            using Tensor target = flat.narrow(0, start, count);
            target.copy_(part);
        }
    }

    public void Dispose() => _source.Dispose();

    private static SafeTensorsSource OpenFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        return new FileSource(path);
    }

    private static SafeTensorsSource WrapStream(Stream stream, bool leaveOpen)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanRead || !stream.CanSeek)
        {
            throw new ArgumentException("a safetensors stream must be readable and seekable", nameof(stream));
        }
        return new StreamSource(stream, leaveOpen);
    }
}
