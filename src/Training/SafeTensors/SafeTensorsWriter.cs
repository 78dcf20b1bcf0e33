using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.SafeTensors;

/// <summary>One tensor of a file written piece by piece: its data comes from a callback when its turn comes.</summary>
/// <param name="WriteData">Writes exactly the tensor's bytes (use <see cref="SafeTensorsWriter.WriteData"/>); checked by count.</param>
public sealed record SafeTensorSpec(string Name, SafeTensorDType DType, long[] Shape, Action<Stream> WriteData);

/// <summary>Writes safetensors files: 8-byte little-endian header length, JSON header padded with spaces to 8 bytes, data.</summary>
public static class SafeTensorsWriter
{
    /// <summary>Writes the tensors (converted to each entry's dtype) in ordinal name order, via a temporary file and a move.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor, SafeTensorDType DType)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        Write(path, Specs(tensors), metadata);
    }

    /// <summary>Writes the tensors to a stream (left open) in ordinal name order.</summary>
    public static void Write(Stream stream, IEnumerable<(string Name, Tensor Tensor, SafeTensorDType DType)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Write(stream, Specs(tensors), metadata);
    }

    /// <summary>The safetensors image of the tensors as bytes (for adapters sent over the network).</summary>
    public static byte[] ToBytes(IEnumerable<(string Name, Tensor Tensor, SafeTensorDType DType)> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var stream = new MemoryStream();
        Write(stream, tensors, metadata);
        return stream.ToArray();
    }

    /// <summary>
    /// Writes a file whose tensors are produced one at a time, so a model larger than memory can be written
    /// (the benchmark's random checkpoints). Temporary file, then a move: a crash never leaves a half-written model.
    /// </summary>
    public static void Write(string path, IEnumerable<SafeTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        string temp = path + ".tmp";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Write(stream, tensors, metadata);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>Writes tensors produced one at a time to a stream (left open), in ordinal name order.</summary>
    public static void Write(Stream stream, IEnumerable<SafeTensorSpec> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensors);
        var entries = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        stream.Write(SafeTensorsHeader.Build(entries.Select(e => (e.Name, e.DType, e.Shape)).ToList(), metadata));
        foreach (var entry in entries)
        {
            long expected = entry.Shape.Aggregate(1L, (a, b) => a * b) * SafeTensorDTypes.ElementSize(entry.DType);
            var counter = new CountingStream(stream);
            entry.WriteData(counter);
            if (counter.Written != expected)
            {
                throw new InvalidOperationException($"tensor '{entry.Name}' wrote {counter.Written} bytes; its shape and dtype need {expected}");
            }
        }
    }

    /// <summary>Writes a tensor's values as <paramref name="dtype"/> (torch's conversion: round to nearest even), row slices at a time.</summary>
    public static void WriteData(Stream stream, Tensor tensor, SafeTensorDType dtype)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensor);
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        ScalarType type = SafeTensorDTypes.ToScalarType(dtype);
        Tensor flat = tensor.detach().reshape(-1);
        const long sliceElements = 4L * 1024 * 1024;
        for (long start = 0; start < flat.numel(); start += sliceElements)
        {
            using var sliceScope = torch.NewDisposeScope();
            Tensor slice = flat.narrow(0, start, Math.Min(sliceElements, flat.numel() - start)).cpu().to_type(type).contiguous();
            stream.Write(slice.bytes);
        }
    }

    private static IEnumerable<SafeTensorSpec> Specs(IEnumerable<(string Name, Tensor Tensor, SafeTensorDType DType)> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return tensors.Select(t => new SafeTensorSpec(t.Name, t.DType, t.Tensor.shape, s => WriteData(s, t.Tensor, t.DType))).ToList();
    }

    /// <summary>Passes writes through and counts them, so a spec that writes the wrong amount is caught.</summary>
    private sealed class CountingStream(Stream inner) : Stream
    {
        public long Written { get; private set; }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            Written += buffer.Length;
        }

        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
