using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>A frozen [out, in] linear weight in some storage form, turned into a dense weight of the compute type per matmul.</summary>
internal abstract class FrozenWeight : IDisposable
{
    // Dequantizing in slices bounds the int64 index and float32 temporaries to a few tens of megabytes per weight.
    protected const long SliceElements = 4L * 1024 * 1024;

    protected FrozenWeight(long outFeatures, long inFeatures)
    {
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
    }

    public long OutFeatures { get; }

    public long InFeatures { get; }

    public long ElementCount => OutFeatures * InFeatures;

    /// <summary>Bytes held on the device by the stored form.</summary>
    public abstract long StorageBytes { get; }

    /// <summary>The storage form's name: float32, bfloat16, float16, int8 or nf4.</summary>
    public abstract string Kind { get; }

    /// <summary>A new dense [out, in] tensor of <paramref name="type"/> that the caller disposes.</summary>
    public abstract Tensor Dequantize(ScalarType type);

    public abstract void Dispose();
}

/// <summary>A dense weight held in a type other than the compute type (a bf16 checkpoint run at fp32, say).</summary>
internal sealed class DenseFrozenWeight(Tensor weight) : FrozenWeight(weight.shape[0], weight.shape[1])
{
    public override long StorageBytes => weight.numel() * weight.element_size();

    public override string Kind => weight.dtype.ToString().ToLowerInvariant();

    public override Tensor Dequantize(ScalarType type)
    {
        using var noGrad = torch.no_grad();
        return weight.to_type(type);
    }

    // The tensor belongs to the module's parameter; only this view of it goes away.
    public override void Dispose()
    {
    }
}
