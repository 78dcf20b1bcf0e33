using Microsoft.Win32.SafeHandles;

namespace Federated.Training.SafeTensors;

/// <summary>Random-access bytes behind a safetensors reader: a file, a seekable stream or a byte buffer.</summary>
internal abstract class SafeTensorsSource : IDisposable
{
    public abstract long Length { get; }

    /// <summary>Fills <paramref name="destination"/> from <paramref name="offset"/>; running out of bytes is an error.</summary>
    public abstract void ReadExactly(long offset, Span<byte> destination);

    public virtual void Dispose()
    {
    }
}

/// <summary>Positional reads (pread) of a file: no file mapping, so loading adds no file-backed pages to the resident set.</summary>
internal sealed class FileSource(string path) : SafeTensorsSource
{
    private readonly SafeFileHandle _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);

    public override long Length => RandomAccess.GetLength(_handle);

    public override void ReadExactly(long offset, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            int read = RandomAccess.Read(_handle, destination, offset);
            if (read == 0)
            {
                throw new EndOfStreamException($"'{path}' ended at byte {offset}, before the tensor data it declares");
            }
            destination = destination[read..];
            offset += read;
        }
    }

    public override void Dispose() => _handle.Dispose();
}

/// <summary>A seekable stream; reads are serialised because they move the stream's position.</summary>
internal sealed class StreamSource(Stream stream, bool leaveOpen) : SafeTensorsSource
{
    private readonly Lock _gate = new();

    public override long Length => stream.Length;

    public override void ReadExactly(long offset, Span<byte> destination)
    {
        lock (_gate)
        {
            stream.Seek(offset, SeekOrigin.Begin);
            stream.ReadExactly(destination);
        }
    }

    public override void Dispose()
    {
        if (!leaveOpen)
        {
            stream.Dispose();
        }
    }
}

/// <summary>Bytes already in memory (an adapter received over the network, for example).</summary>
internal sealed class MemorySource(ReadOnlyMemory<byte> bytes) : SafeTensorsSource
{
    public override long Length => bytes.Length;

    public override void ReadExactly(long offset, Span<byte> destination)
    {
        if (offset < 0 || offset + destination.Length > bytes.Length)
        {
            throw new EndOfStreamException($"byte range [{offset}, {offset + destination.Length}) is outside the {bytes.Length}-byte buffer");
        }
        bytes.Span.Slice((int)offset, destination.Length).CopyTo(destination);
    }
}
