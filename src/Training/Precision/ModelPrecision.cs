using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>The precision of the matmuls against frozen base weights (norms, softmax, loss and LoRA stay float32).</summary>
public enum ModelPrecision
{
    /// <summary>bf16 where the device has native bf16 matmul, else fp32.</summary>
    Auto,
    Fp32,
    Bf16,
    Fp16,
}

/// <summary>How the frozen linear weights of the decoder layers are stored (QLoRA-style when quantized).</summary>
public enum BaseQuantization
{
    None,

    /// <summary>Per-output-channel absmax int8 (Dettmers et al. 2022, LLM.int8()).</summary>
    Int8,

    /// <summary>Blockwise 4-bit NormalFloat with double-quantized scales (Dettmers et al. 2023, QLoRA).</summary>
    Nf4,
}

/// <summary>A precision or quantization the device cannot run; <see cref="Option"/> names the setting (precision, quantize).</summary>
public sealed class UnsupportedPrecisionException(string option, string message) : NotSupportedException(message)
{
    public string Option { get; } = option;
}

/// <summary>Parses the user-facing names and resolves a precision against a device's capabilities.</summary>
public static class PrecisionChoices
{
    public static readonly IReadOnlyList<string> PrecisionNames = ["auto", "fp32", "bf16", "fp16"];
    public static readonly IReadOnlyList<string> QuantizationNames = ["none", "int8", "nf4"];

    public static ModelPrecision ParsePrecision(string value) => value?.ToLowerInvariant() switch
    {
        "auto" => ModelPrecision.Auto,
        "fp32" => ModelPrecision.Fp32,
        "bf16" => ModelPrecision.Bf16,
        "fp16" => ModelPrecision.Fp16,
        _ => throw new ArgumentOutOfRangeException(nameof(value), value, "precision must be auto, fp32, bf16 or fp16"),
    };

    public static BaseQuantization ParseQuantization(string value) => value?.ToLowerInvariant() switch
    {
        "none" => BaseQuantization.None,
        "int8" => BaseQuantization.Int8,
        "nf4" => BaseQuantization.Nf4,
        _ => throw new ArgumentOutOfRangeException(nameof(value), value, "quantize must be none, int8 or nf4"),
    };

    public static string Name(ModelPrecision precision) => PrecisionNames[(int)precision];

    public static string Name(BaseQuantization quantization) => QuantizationNames[(int)quantization];

    /// <summary>The compute element type; bf16 or fp16 without native matmul units is refused, not run at a crawl.</summary>
    public static ScalarType ComputeType(ModelPrecision precision, DeviceCapabilities capabilities)
    {
        ArgumentNullException.ThrowIfNull(capabilities);
        switch (precision)
        {
            case ModelPrecision.Auto:
                return capabilities.NativeBf16Matmul ? ScalarType.BFloat16 : ScalarType.Float32;
            case ModelPrecision.Fp32:
                return ScalarType.Float32;
            case ModelPrecision.Bf16 when capabilities.NativeBf16Matmul:
                return ScalarType.BFloat16;
            case ModelPrecision.Bf16:
                throw new UnsupportedPrecisionException("precision",
                    $"bf16 needs native bf16 matmul (AVX512-BF16 or AMX on a CPU, compute capability 8.0+ on CUDA); this is a {capabilities.Description}; use fp32 or auto");
            case ModelPrecision.Fp16 when capabilities.NativeFp16Matmul:
                return ScalarType.Float16;
            case ModelPrecision.Fp16:
                throw new UnsupportedPrecisionException("precision",
                    $"fp16 needs native fp16 matmul (AVX512-FP16 or AMX-FP16 on a CPU, compute capability 7.0+ on CUDA); this is a {capabilities.Description}; use bf16, fp32 or auto");
            default:
                throw new ArgumentOutOfRangeException(nameof(precision), precision, "unknown precision");
        }
    }

    /// <summary>Quantized weights are dequantized with plain tensor ops, which CPU and CUDA devices run.</summary>
    public static void CheckQuantization(BaseQuantization quantization, Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (quantization != BaseQuantization.None && device.type is not (DeviceType.CPU or DeviceType.CUDA))
        {
            throw new UnsupportedPrecisionException("quantize",
                $"{Name(quantization)} base weights are supported on CPU and CUDA devices, not on {device.type}; use none");
        }
    }
}
