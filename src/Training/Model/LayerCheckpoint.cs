using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// Activation checkpointing of one decoder layer (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost";
/// torch.utils.checkpoint's reentrant variant): forward runs the layer without building a graph and keeps only its
/// input; backward runs the layer again with gradients on and differentiates that recomputation. The CPU generator
/// state is replayed so that LoRA dropout draws the same masks both times, making gradients equal to a plain run.
/// </summary>
internal sealed class LayerCheckpoint : autograd.SingleTensorFunction<LayerCheckpoint>
{
    public override string Name => nameof(LayerCheckpoint);

    public static Tensor Apply(DecoderLayer layer, Tensor hidden, AttentionInputs inputs)
    {
        Parameter[] trainable = layer.parameters().Where(p => p.requires_grad).ToArray();
        bool randomness = layer.training && layer.UsesDropout;
        if (randomness && hidden.device_type != DeviceType.CPU)
        {
            // TorchSharp exposes only the CPU generator's state, so masks drawn on a GPU could not be replayed.
            throw new NotSupportedException("activation checkpointing with LoRA dropout runs on the CPU only; set the LoRA dropout to 0 or turn checkpointing off");
        }
        var call = new Call(layer, trainable.Length, hidden.requires_grad, randomness);
        object[] args = [call, hidden, .. trainable];
        // cos, sin, the masks and the generator state go through save_for_backward below, not as inputs.
        call.Extra = [inputs.Cos, inputs.Sin, inputs.FullMask, inputs.SlidingMask, randomness ? torch.get_rng_state() : null];
        return apply(args);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (Call)vars[0];
        var hidden = (Tensor)vars[1];
        Tensor?[] extra = call.Extra!;
        call.Extra = null;
        ctx.save_for_backward([hidden, extra[0]!, extra[1]!, extra[2]!, extra[3]!, extra[4]!]);
        ctx.save_data("call", call);
        return call.Layer.Forward(hidden, new AttentionInputs(extra[0]!, extra[1]!, extra[2], extra[3], null));
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        // The scope first: the handles get_saved_variables makes, and the gradient's (TorchSharp hands backward a new handle
        // it never frees), are this backward's to dispose rather than the .NET finalizer's.
        using var scope = torch.NewDisposeScope();
        using Tensor gradHandle = gradOutput;
        var call = (Call)ctx.get_data("call");
        List<Tensor> saved = ctx.get_saved_variables();
        Tensor hidden = saved[0];
        var attention = new AttentionInputs(saved[1], saved[2], saved[3], saved[4], null);
        Tensor? rngState = saved[5];
        Parameter[] trainable = call.Layer.parameters().Where(p => p.requires_grad).ToArray();
        if (trainable.Length != call.TrainableCount)
        {
            throw new InvalidOperationException("the layer's trainable parameters changed between forward and backward");
        }
        using var gradMode = torch.enable_grad();
        Tensor input = hidden.detach().requires_grad_(call.InputNeedsGrad);
        Tensor output;
        if (call.ReplaysRandomness)
        {
            Tensor current = torch.get_rng_state();
            torch.set_rng_state(rngState!);
            try
            {
                output = call.Layer.Forward(input, attention);
            }
            finally
            {
                torch.set_rng_state(current);
            }
        }
        else
        {
            output = call.Layer.Forward(input, attention);
        }
        var inputs = new List<Tensor>();
        if (call.InputNeedsGrad)
        {
            inputs.Add(input);
        }
        inputs.AddRange(trainable);
        IList<Tensor> grads = torch.autograd.grad([output], inputs, [gradOutput], allow_unused: true);
        var result = new List<Tensor> { null!, null! };
        int next = 0;
        if (call.InputNeedsGrad)
        {
            result[1] = Defined(grads[next++]);
        }
        for (int i = 0; i < trainable.Length; i++)
        {
            result.Add(Defined(grads[next++]));
        }
        return result;
    }

    private static Tensor Defined(Tensor? grad) =>
        grad is null || grad.IsInvalid ? null! : grad.MoveToOuterDisposeScope();

    private sealed class Call(DecoderLayer layer, int trainableCount, bool inputNeedsGrad, bool replaysRandomness)
    {
        public DecoderLayer Layer { get; } = layer;
        public int TrainableCount { get; } = trainableCount;
        public bool InputNeedsGrad { get; } = inputNeedsGrad;
        public bool ReplaysRandomness { get; } = replaysRandomness;

        /// <summary>Tensors handed from Apply to forward for save_for_backward (forward's arguments would make them graph inputs).</summary>
        public Tensor?[]? Extra { get; set; }
    }
}
