using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>
/// Blockwise 4-bit NormalFloat (Dettmers et al. 2023, QLoRA §3): blocks of 64 values scaled by their absmax and
/// rounded to the nearest of 16 levels, two per byte (first value in the high nibble, as bitsandbytes). Double
/// quantization as bitsandbytes' quantize_4bit(compress_statistics=True): the absmax constants minus their mean are
/// quantized to 8 bits with the signed dynamic code in blocks of 256, each block with its own float32 absmax.
/// </summary>
internal sealed class Nf4Weight : FrozenWeight
{
    public const int BlockSize = 64;
    public const int ScaleBlockSize = 256;

    /// <summary>The NF4 levels (QLoRA Appendix E; bitsandbytes get_4bit_type("nf4")).</summary>
    internal static readonly float[] Levels =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
        0.7229568362236023f, 1.0f,
    ];

    private static readonly float[] s_dynamicCode = DynamicCode();

    private readonly Tensor _packed;
    private readonly Tensor _scaleCodes;
    private readonly Tensor _scaleScales;
    private readonly float _scaleOffset;

    private Nf4Weight(long outFeatures, long inFeatures, Tensor packed, Tensor scaleCodes, Tensor scaleScales, float scaleOffset)
        : base(outFeatures, inFeatures)
    {
        _packed = packed;
        _scaleCodes = scaleCodes;
        _scaleScales = scaleScales;
        _scaleOffset = scaleOffset;
    }

    public override long StorageBytes => _packed.numel() + _scaleCodes.numel() + _scaleScales.numel() * 4 + 4;

    public override string Kind => "nf4";

    /// <summary>bitsandbytes' signed dynamic 8-bit code (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)), sorted.</summary>
    internal static IReadOnlyList<float> ScaleCode => s_dynamicCode;

    /// <summary>Quantizes a [out, in] weight of any float type on its own device; the source is left unchanged.</summary>
    public static Nf4Weight Quantize(Tensor weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (weight.dim() != 2)
        {
            throw new ArgumentException($"an nf4 weight must be [out, in]; got [{string.Join(", ", weight.shape)}]", nameof(weight));
        }
        using var noGrad = torch.no_grad();
        Device device = weight.device;
        long count = weight.numel();
        long blocks = (count + BlockSize - 1) / BlockSize;
        using Tensor flat = weight.reshape(-1);
        using Tensor levelBounds = Midpoints(Levels, device);
        Tensor packed = torch.empty([blocks * BlockSize / 2], ScalarType.Byte, device);
        using Tensor absmax = torch.empty([blocks], ScalarType.Float32, device);
        long blocksPerSlice = Math.Max(1, SliceElements / BlockSize);
        for (long first = 0; first < blocks; first += blocksPerSlice)
        {
            using var scope = torch.NewDisposeScope();
            long n = Math.Min(blocksPerSlice, blocks - first);
            long start = first * BlockSize;
            long available = Math.Min(n * BlockSize, count - start);
            Tensor values = flat.narrow(0, start, available).to_type(ScalarType.Float32);
            if (available < n * BlockSize)
            {
                values = torch.cat([values, torch.zeros(n * BlockSize - available, ScalarType.Float32, device)]);
            }
            Tensor blockValues = values.view(n, BlockSize);
            Tensor scale = blockValues.abs().amax([1L]);
            absmax.narrow(0, first, n).copy_(scale);
            // An all-zero block divides by 1, so its values land on the 0 level instead of NaN.
            Tensor safe = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1);
            Tensor indices = torch.bucketize(blockValues / safe, levelBounds).view(-1, 2);
            Tensor bytes = indices.select(1, 0).bitwise_left_shift(4).bitwise_or_(indices.select(1, 1));
            packed.narrow(0, first * BlockSize / 2, n * BlockSize / 2).copy_(bytes);
        }
        var (scaleCodes, scaleScales, offset) = QuantizeScales(absmax);
        return new Nf4Weight(weight.shape[0], weight.shape[1], packed, scaleCodes, scaleScales, offset);
    }

    public override Tensor Dequantize(ScalarType type)
    {
        using var noGrad = torch.no_grad();
        Device device = _packed.device;
        long count = ElementCount;
        long blocks = _packed.numel() * 2 / BlockSize;
        using Tensor absmax = Scales();
        using Tensor pairs = BytePairs(device);
        Tensor result = torch.empty([OutFeatures, InFeatures], type, device);
        using Tensor flat = result.view(-1);
        long blocksPerSlice = Math.Max(1, SliceElements / BlockSize);
        for (long first = 0; first < blocks; first += blocksPerSlice)
        {
            using var scope = torch.NewDisposeScope();
            long n = Math.Min(blocksPerSlice, blocks - first);
            Tensor codes = _packed.narrow(0, first * BlockSize / 2, n * BlockSize / 2).to_type(ScalarType.Int64);
            Tensor values = pairs.index_select(0, codes).view(n, BlockSize).mul_(absmax.narrow(0, first, n).unsqueeze(1));
            long start = first * BlockSize;
            long available = Math.Min(n * BlockSize, count - start);
            flat.narrow(0, start, available).copy_(values.view(-1).narrow(0, 0, available));
        }
        return result;
    }

    /// <summary>The float32 absmax of every 64-value block after the double quantization round trip.</summary>
    internal Tensor Scales()
    {
        using var scope = torch.NewDisposeScope();
        Tensor code = torch.tensor(s_dynamicCode, device: _scaleCodes.device);
        long blocks = _scaleCodes.numel();
        long padded = _scaleScales.numel() * ScaleBlockSize;
        Tensor values = code.index_select(0, _scaleCodes.to_type(ScalarType.Int64));
        if (padded > blocks)
        {
            values = torch.cat([values, torch.zeros(padded - blocks, ScalarType.Float32, values.device)]);
        }
        Tensor scales = values.view(-1, ScaleBlockSize).mul(_scaleScales.unsqueeze(1)).view(-1).narrow(0, 0, blocks).add(_scaleOffset);
        return scales.MoveToOuterDisposeScope();
    }

    public override void Dispose()
    {
        _packed.Dispose();
        _scaleCodes.Dispose();
        _scaleScales.Dispose();
    }

    private static (Tensor Codes, Tensor Scales, float Offset) QuantizeScales(Tensor absmax)
    {
        using var scope = torch.NewDisposeScope();
        Device device = absmax.device;
        long blocks = absmax.numel();
        float offset = absmax.mean().item<float>();
        Tensor centred = absmax - offset;
        long scaleBlocks = (blocks + ScaleBlockSize - 1) / ScaleBlockSize;
        if (scaleBlocks * ScaleBlockSize > blocks)
        {
            centred = torch.cat([centred, torch.zeros(scaleBlocks * ScaleBlockSize - blocks, ScalarType.Float32, device)]);
        }
        Tensor grouped = centred.view(scaleBlocks, ScaleBlockSize);
        Tensor scale = grouped.abs().amax([1L]);
        Tensor safe = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1);
        Tensor codes = torch.bucketize(grouped / safe, Midpoints(s_dynamicCode, device)).view(-1).narrow(0, 0, blocks).to_type(ScalarType.Byte);
        return (codes.MoveToOuterDisposeScope(), scale.MoveToOuterDisposeScope(), offset);
    }

    /// <summary>Byte b decodes to the pair (level[b >> 4], level[b &amp; 15]): one gather per two values.</summary>
    private static Tensor BytePairs(Device device)
    {
        var pairs = new float[256 * 2];
        for (int b = 0; b < 256; b++)
        {
            pairs[2 * b] = Levels[b >> 4];
            pairs[2 * b + 1] = Levels[b & 15];
        }
        return torch.tensor(pairs, [256, 2], device: device);
    }

    /// <summary>Decision boundaries halfway between sorted levels: bucketize then yields the nearest level's index.</summary>
    private static Tensor Midpoints(float[] sortedLevels, Device device)
    {
        var bounds = new float[sortedLevels.Length - 1];
        for (int i = 0; i < bounds.Length; i++)
        {
            bounds[i] = (sortedLevels[i] + sortedLevels[i + 1]) / 2;
        }
        return torch.tensor(bounds, device: device);
    }

    /// <summary>bitsandbytes functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), in float32.</summary>
    private static float[] DynamicCode()
    {
        const int maxExponentBits = 7;
        var data = new List<float>();
        for (int i = 0; i < maxExponentBits; i++)
        {
            int fractionItems = (1 << i) + 1;
            using Tensor boundaries = torch.linspace(0.1, 1, fractionItems, ScalarType.Float32);
            using Tensor means = (boundaries.narrow(0, 0, fractionItems - 1) + boundaries.narrow(0, 1, fractionItems - 1)) / 2.0;
            float scale = (float)Math.Pow(10, -(maxExponentBits - 1) + i);
            foreach (float m in means.data<float>())
            {
                data.Add(scale * m);
                data.Add(-scale * m);
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return [.. data];
    }
}
