using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Federated.Wire;

/// <summary>
/// The little-endian bytes of a ring vector, viewed in place: a masked input is sent as <see cref="Memory"/> slices
/// (<see cref="SecAggWire.UploadChunks"/>) without a second copy of its d elements.
/// </summary>
public sealed class RingElementBytes : MemoryManager<byte>
{
    private readonly uint[] _values;

    /// <summary>Takes over <paramref name="values"/>: on a big-endian machine they are byte-swapped in place, so read them as numbers no more.</summary>
    public RingElementBytes(uint[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        _values = values;
        if (!BitConverter.IsLittleEndian)
        {
            BinaryPrimitives.ReverseEndianness(values, values);
        }
    }

    public override Span<byte> GetSpan() => MemoryMarshal.AsBytes(_values.AsSpan());

    public override unsafe MemoryHandle Pin(int elementIndex = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, 4 * _values.Length);
        GCHandle handle = GCHandle.Alloc(_values, GCHandleType.Pinned);
        return new MemoryHandle((byte*)handle.AddrOfPinnedObject() + elementIndex, handle);
    }

    public override void Unpin()
    {
        // Each Pin's MemoryHandle frees its own GCHandle.
    }

    protected override void Dispose(bool disposing)
    {
        // Nothing is owned beyond the managed array.
    }
}
