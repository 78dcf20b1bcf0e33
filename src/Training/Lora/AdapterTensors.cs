using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Lora;

/// <summary>One named float32 tensor held in managed memory (row-major), independent of TorchSharp's lifetimes.</summary>
public sealed record NamedTensor(string Name, long[] Shape, float[] Data)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>A CPU float32 tensor with these values (the caller owns it).</summary>
    public Tensor ToTensor() => torch.tensor(Data, Shape, ScalarType.Float32);

    /// <summary>Copies a tensor (any device or float type) into managed memory.</summary>
    public static NamedTensor FromTensor(string name, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        using var cpu = tensor.detach().to_type(ScalarType.Float32).cpu().contiguous();
        return new NamedTensor(name, cpu.shape.ToArray(), cpu.data<float>().ToArray());
    }
}

/// <summary>
/// A LoRA adapter as named tensors with PEFT's key names
/// (<c>base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight</c> [r, in], <c>...lora_B.weight</c> [out, r]),
/// always in ordinal name order, so flattening to one vector is stable across clients and the coordinator.
/// </summary>
public sealed class AdapterTensors
{
    private readonly NamedTensor[] _tensors;

    public AdapterTensors(IEnumerable<NamedTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        _tensors = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToArray();
        for (int i = 0; i < _tensors.Length; i++)
        {
            var t = _tensors[i];
            if (t.Shape.Any(d => d < 0) || t.ElementCount != t.Data.Length)
            {
                throw new ArgumentException($"adapter tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}] but {t.Data.Length} values", nameof(tensors));
            }
            if (i > 0 && string.Equals(_tensors[i - 1].Name, t.Name, StringComparison.Ordinal))
            {
                throw new ArgumentException($"adapter tensor '{t.Name}' appears twice", nameof(tensors));
            }
        }
    }

    /// <summary>The tensors in ordinal name order.</summary>
    public IReadOnlyList<NamedTensor> Tensors => _tensors;

    public IEnumerable<string> Names => _tensors.Select(t => t.Name);

    /// <summary>Total number of values, the length of <see cref="Flatten"/>.</summary>
    public long ElementCount => _tensors.Sum(t => (long)t.Data.Length);

    public NamedTensor this[string name] =>
        _tensors.FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.Ordinal))
            ?? throw new KeyNotFoundException($"adapter has no tensor '{name}'");

    public bool Contains(string name) => _tensors.Any(t => string.Equals(t.Name, name, StringComparison.Ordinal));

    /// <summary>Only the named tensors (e.g. the trainable lora_B ones under FFA-LoRA).</summary>
    public AdapterTensors Select(IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(names);
        return new AdapterTensors(names.Distinct(StringComparer.Ordinal).Select(n => this[n]));
    }

    /// <summary>Only the lora_B tensors: what FFA-LoRA trains and federated rounds exchange.</summary>
    public AdapterTensors OnlyB() => new(_tensors.Where(t => t.Name.EndsWith(".lora_B.weight", StringComparison.Ordinal)));

    /// <summary>All values concatenated in ordinal name order, each tensor row-major.</summary>
    public float[] Flatten()
    {
        var flat = new float[checked((int)ElementCount)];
        int offset = 0;
        foreach (var t in _tensors)
        {
            t.Data.CopyTo(flat, offset);
            offset += t.Data.Length;
        }
        return flat;
    }

    /// <summary>The inverse of <see cref="Flatten"/>: new tensors with this adapter's names and shapes and the given values.</summary>
    public AdapterTensors Unflatten(ReadOnlySpan<float> values)
    {
        if (values.Length != ElementCount)
        {
            throw new ArgumentException($"vector has {values.Length} values; the adapter layout needs {ElementCount}", nameof(values));
        }
        var result = new NamedTensor[_tensors.Length];
        int offset = 0;
        for (int i = 0; i < _tensors.Length; i++)
        {
            var t = _tensors[i];
            result[i] = new NamedTensor(t.Name, (long[])t.Shape.Clone(), values.Slice(offset, t.Data.Length).ToArray());
            offset += t.Data.Length;
        }
        return new AdapterTensors(result);
    }

    /// <summary>this − other, name by name (the federated update delta = after − before).</summary>
    public AdapterTensors Subtract(AdapterTensors other) => Combine(other, (a, b) => a - b);

    /// <summary>this + other, name by name (applying an aggregated delta).</summary>
    public AdapterTensors Add(AdapterTensors other) => Combine(other, (a, b) => a + b);

    private AdapterTensors Combine(AdapterTensors other, Func<float, float, float> op)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other._tensors.Length != _tensors.Length)
        {
            throw new ArgumentException($"adapters differ: {_tensors.Length} tensors versus {other._tensors.Length}", nameof(other));
        }
        var result = new NamedTensor[_tensors.Length];
        for (int i = 0; i < _tensors.Length; i++)
        {
            var a = _tensors[i];
            var b = other._tensors[i];
            if (!string.Equals(a.Name, b.Name, StringComparison.Ordinal) || !a.Shape.SequenceEqual(b.Shape))
            {
                throw new ArgumentException($"adapters differ at '{a.Name}' [{string.Join(", ", a.Shape)}] versus '{b.Name}' [{string.Join(", ", b.Shape)}]", nameof(other));
            }
            var data = new float[a.Data.Length];
            for (int j = 0; j < data.Length; j++)
            {
                data[j] = op(a.Data[j], b.Data[j]);
            }
            result[i] = new NamedTensor(a.Name, (long[])a.Shape.Clone(), data);
        }
        return new AdapterTensors(result);
    }
}
