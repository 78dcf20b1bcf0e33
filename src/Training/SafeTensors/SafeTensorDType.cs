using static TorchSharp.torch;

namespace Federated.Training.SafeTensors;

/// <summary>Element types of the safetensors format (the header's "dtype" strings).</summary>
public enum SafeTensorDType
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    BOOL,
}

/// <summary>One tensor entry of a safetensors header: dtype, shape and byte range in the data section.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorDType DType, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    public long ByteCount => End - Begin;
}

/// <summary>Sizes and TorchSharp counterparts of the safetensors element types.</summary>
public static class SafeTensorDTypes
{
    public static int ElementSize(SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F64 or SafeTensorDType.I64 => 8,
        SafeTensorDType.F32 or SafeTensorDType.I32 => 4,
        SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.I16 => 2,
        _ => 1,
    };

    /// <summary>True for F32, F16, BF16 and F64.</summary>
    public static bool IsFloatingPoint(SafeTensorDType dtype) =>
        dtype is SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.F64;

    /// <summary>The TorchSharp element type that holds this dtype's bytes unchanged.</summary>
    public static ScalarType ToScalarType(SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F32 => ScalarType.Float32,
        SafeTensorDType.F16 => ScalarType.Float16,
        SafeTensorDType.BF16 => ScalarType.BFloat16,
        SafeTensorDType.F64 => ScalarType.Float64,
        SafeTensorDType.I64 => ScalarType.Int64,
        SafeTensorDType.I32 => ScalarType.Int32,
        SafeTensorDType.I16 => ScalarType.Int16,
        SafeTensorDType.I8 => ScalarType.Int8,
        SafeTensorDType.U8 => ScalarType.Byte,
        SafeTensorDType.BOOL => ScalarType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown safetensors dtype"),
    };

    /// <summary>The safetensors dtype for a TorchSharp element type.</summary>
    public static SafeTensorDType FromScalarType(ScalarType type) => type switch
    {
        ScalarType.Float32 => SafeTensorDType.F32,
        ScalarType.Float16 => SafeTensorDType.F16,
        ScalarType.BFloat16 => SafeTensorDType.BF16,
        ScalarType.Float64 => SafeTensorDType.F64,
        ScalarType.Int64 => SafeTensorDType.I64,
        ScalarType.Int32 => SafeTensorDType.I32,
        ScalarType.Int16 => SafeTensorDType.I16,
        ScalarType.Int8 => SafeTensorDType.I8,
        ScalarType.Byte => SafeTensorDType.U8,
        ScalarType.Bool => SafeTensorDType.BOOL,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "no safetensors dtype for this element type"),
    };

    /// <summary>The safetensors dtype named by a config.json torch_dtype ("float32", "bfloat16", "float16").</summary>
    public static SafeTensorDType FromTorchDtypeName(string name) => name switch
    {
        "float32" or "float" => SafeTensorDType.F32,
        "bfloat16" => SafeTensorDType.BF16,
        "float16" or "half" => SafeTensorDType.F16,
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "torch_dtype must be float32, bfloat16 or float16"),
    };

    /// <summary>The config.json torch_dtype name of a model weight dtype.</summary>
    public static string ToTorchDtypeName(SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F32 => "float32",
        SafeTensorDType.BF16 => "bfloat16",
        SafeTensorDType.F16 => "float16",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "model weights are float32, bfloat16 or float16"),
    };
}
