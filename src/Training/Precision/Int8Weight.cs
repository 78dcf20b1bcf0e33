using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>
/// Per-output-channel absmax int8 (Dettmers et al. 2022, LLM.int8() §2.1): q = round(127 · w / absmax(row)),
/// w ≈ q · absmax(row) / 127, so each value is off by at most half a step, absmax(row) / 254.
/// </summary>
internal sealed class Int8Weight : FrozenWeight
{
    private readonly Tensor _codes;
    private readonly Tensor _scales;

    private Int8Weight(Tensor codes, Tensor scales)
        : base(codes.shape[0], codes.shape[1])
    {
        _codes = codes;
        _scales = scales;
    }

    public override long StorageBytes => _codes.numel() + _scales.numel() * 4;

    public override string Kind => "int8";

    /// <summary>The int8 codes [out, in] (for tests).</summary>
    internal Tensor Codes => _codes;

    /// <summary>absmax(row) / 127 per output channel, float32 (for tests).</summary>
    internal Tensor Scales => _scales;

    /// <summary>Quantizes a [out, in] weight of any float type on its own device; the source is left unchanged.</summary>
    public static Int8Weight Quantize(Tensor weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2)
        {
            throw new ArgumentException($"an int8 weight must be [out, in]; got [{string.Join(", ", weight.shape)}]", nameof(weight));
        }
        using var noGrad = torch.no_grad();
        long rows = weight.shape[0], columns = weight.shape[1];
        Tensor codes = torch.empty([rows, columns], ScalarType.Int8, weight.device);
        Tensor scales = torch.empty([rows], ScalarType.Float32, weight.device);
        long step = Math.Max(1, SliceElements / Math.Max(1, columns));
        for (long start = 0; start < rows; start += step)
        {
            using var scope = torch.NewDisposeScope();
            long count = Math.Min(step, rows - start);
            Tensor block = weight.narrow(0, start, count).to_type(ScalarType.Float32);
            Tensor scale = block.abs().amax([1L]).div_(127.0);
            // An all-zero row has scale 0: divide by 1 instead, so its codes are 0 rather than NaN.
            Tensor safe = torch.where(scale > 0, scale, torch.ones_like(scale));
            Tensor q = block.div(safe.unsqueeze(1)).round_().clamp_(-127, 127);
            codes.narrow(0, start, count).copy_(q);
            scales.narrow(0, start, count).copy_(scale);
        }
        return new Int8Weight(codes, scales);
    }

    public override Tensor Dequantize(ScalarType type)
    {
        using var noGrad = torch.no_grad();
        Tensor result = torch.empty([OutFeatures, InFeatures], type, _codes.device);
        long step = Math.Max(1, SliceElements / Math.Max(1, InFeatures));
        for (long start = 0; start < OutFeatures; start += step)
        {
            using var scope = torch.NewDisposeScope();
            long count = Math.Min(step, OutFeatures - start);
            Tensor values = _codes.narrow(0, start, count).to_type(ScalarType.Float32).mul_(_scales.narrow(0, start, count).unsqueeze(1));
            result.narrow(0, start, count).copy_(values);
        }
        return result;
    }

    public override void Dispose()
    {
        _codes.Dispose();
        _scales.Dispose();
    }
}
