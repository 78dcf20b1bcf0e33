using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>How a model holds its frozen weights: their element type, the matmul compute type, and quantization of the layer projections.</summary>
/// <param name="WeightType">Element type of dense frozen weights (embedding, head, unquantized projections).</param>
/// <param name="ComputeType">Element type the matmuls against frozen weights run in.</param>
/// <param name="Quantization">Storage of the decoder layers' projection weights (the embedding and head are never quantized).</param>
public sealed record WeightStorage(ScalarType WeightType, ScalarType ComputeType, BaseQuantization Quantization)
{
    /// <summary>Everything float32, unquantized: the exact reference configuration.</summary>
    public static WeightStorage Float32 { get; } = new(ScalarType.Float32, ScalarType.Float32, BaseQuantization.None);

    /// <summary>Throws unless both types are float32, bfloat16 or float16.</summary>
    public void Validate()
    {
        foreach (var (type, name) in new[] { (WeightType, nameof(WeightType)), (ComputeType, nameof(ComputeType)) })
        {
            if (type is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            {
                throw new ArgumentOutOfRangeException(name, type, "weights and compute must be float32, bfloat16 or float16");
            }
        }
        if (!Enum.IsDefined(Quantization))
        {
            throw new ArgumentOutOfRangeException(nameof(Quantization), Quantization, "quantization must be none, int8 or nf4");
        }
    }
}
