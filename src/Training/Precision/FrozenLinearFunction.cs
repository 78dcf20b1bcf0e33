using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>
/// y = x Wᵀ for a frozen weight kept in a storage form (quantized, or a float type other than the compute type):
/// the dense weight exists only for the duration of one matmul. Autograd would otherwise save the dense copy of
/// every layer's weight until backward, which is the memory quantization set out to save; backward rebuilds it
/// instead to compute the input gradient (the weight itself never gets one).
/// </summary>
internal sealed class FrozenLinearFunction : autograd.SingleTensorFunction<FrozenLinearFunction>
{
    public override string Name => nameof(FrozenLinearFunction);

    /// <summary>y = x Wᵀ in <paramref name="computeType"/>; <paramref name="input"/> must already have that type.</summary>
    public static Tensor Apply(FrozenWeight weight, ScalarType computeType, Tensor input) =>
        apply(new Call(weight, computeType), input);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (Call)vars[0];
        var input = (Tensor)vars[1];
        ctx.save_data("call", call);
        using Tensor weight = call.Weight.Dequantize(call.ComputeType);
        return nn.functional.linear(input, weight);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var call = (Call)ctx.get_data("call");
        using Tensor weight = call.Weight.Dequantize(call.ComputeType);
        // Position 0 is the non-tensor argument; it gets no gradient.
        return [null!, gradOutput.matmul(weight)];
    }

    private sealed record Call(FrozenWeight Weight, ScalarType ComputeType);
}
