using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// Keys and values of the positions a model has already seen, per decoder layer, so that generation runs each new
/// token through the model once. Keys are stored after the rotary embedding and before grouped heads are repeated.
/// </summary>
/// <remarks>
/// Sliding-window layers keep every position too (the mask hides the old ones), so the cache is one simple layout and
/// its attention equals a full pass exactly. The token ids are kept as well: LongRoPE changes every position's
/// rotation once the sequence outgrows the original context, and the model then recomputes the cache from them.
/// </remarks>
internal sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;
    private Tensor? _ids;
    private long _capacity;

    public KvCache(int layers, long initialCapacity = 256)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(initialCapacity);
        _keys = new Tensor?[layers];
        _values = new Tensor?[layers];
        _capacity = initialCapacity;
    }

    /// <summary>Positions stored (and committed by <see cref="Advance"/>).</summary>
    public long Length { get; private set; }

    /// <summary>Whether the stored keys were rotated with LongRoPE's long factors.</summary>
    public bool LongFactors { get; set; }

    public int Layers => _keys.Length;

    /// <summary>The token ids [B, Length] the cache holds keys and values for.</summary>
    public Tensor TokenIds() =>
        _ids?.narrow(1, 0, Length) ?? throw new InvalidOperationException("the cache is empty");

    /// <summary>Writes this pass's keys and values [B, kv, T, D] after the stored ones and returns all [B, kv, Length + T, D].</summary>
    public (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        long length = keys.shape[2];
        Tensor cachedKeys = Write(ref _keys[layer], keys, Length, 2);
        Tensor cachedValues = Write(ref _values[layer], values, Length, 2);
        return (cachedKeys.narrow(2, 0, Length + length), cachedValues.narrow(2, 0, Length + length));
    }

    /// <summary>Records the pass's token ids [B, T] and commits its positions once every layer has appended.</summary>
    public void Advance(Tensor ids)
    {
        long length = ids.shape[1];
        Write(ref _ids, ids, Length, 1);
        Length += length;
    }

    /// <summary>Forgets every position (the buffers are kept for reuse).</summary>
    public void Clear()
    {
        Length = 0;
        LongFactors = false;
    }

    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values).Append(_ids))
        {
            t?.Dispose();
        }
    }

    /// <summary>Copies <paramref name="block"/> into <paramref name="buffer"/> at <paramref name="offset"/> along <paramref name="dim"/>, growing it as needed.</summary>
    private Tensor Write(ref Tensor? buffer, Tensor block, long offset, int dim)
    {
        long needed = offset + block.shape[dim];
        if (buffer is null || buffer.shape[dim] < needed)
        {
            while (_capacity < needed)
            {
                _capacity *= 2;
            }
            long[] shape = block.shape.ToArray();
            shape[dim] = _capacity;
            Tensor grown = torch.empty(shape, block.dtype, block.device);
            if (buffer is not null && offset > 0)
            {
                grown.narrow(dim, 0, offset).copy_(buffer.narrow(dim, 0, offset));
            }
            buffer?.Dispose();
            buffer = grown.DetachFromDisposeScope();
        }
        buffer.narrow(dim, offset, block.shape[dim]).copy_(block);
        return buffer;
    }
}
