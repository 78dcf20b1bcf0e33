using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// Summed token cross-entropy of the LM head, sum_i (logsumexp(h_i Wᵀ) - (h_i Wᵀ)[y_i]), over chunks of tokens, so the
/// [tokens x vocabulary] logits never exist whole (Qwen's 151,936-token vocabulary makes them the largest tensor of a
/// step). Forward keeps only the hidden states; backward recomputes each chunk's logits and turns them into
/// softmax - onehot(y), the gradient of cross-entropy with respect to the logits. The head matmul runs in the
/// compute type; logits, softmax and the loss are float32. With Gemma 2's final_logit_softcapping the logits are
/// c · tanh(z / c) of the head's z, and backward multiplies by their derivative 1 - tanh²(z / c).
/// </summary>
internal sealed class ChunkedLmHeadLoss : autograd.SingleTensorFunction<ChunkedLmHeadLoss>
{
    public override string Name => nameof(ChunkedLmHeadLoss);

    /// <param name="hidden">[N, H] float32 hidden states of the labelled positions.</param>
    /// <param name="labels">[N] int64 target ids (no ignored positions).</param>
    /// <param name="weight">Returns the head weight [V, H] in <paramref name="computeType"/> (a tensor the caller disposes).</param>
    /// <param name="trainableWeight">The head weight when it trains (full fine-tuning, float32); it then gets a gradient.</param>
    /// <param name="chunkRows">Tokens per chunk.</param>
    public static Tensor Apply(Tensor hidden, Tensor labels, Func<Tensor> weight, Tensor? trainableWeight, ScalarType computeType,
        long chunkRows, double? softcap = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkRows);
        var call = new Call(labels, weight, computeType, chunkRows, trainableWeight is not null, softcap);
        return trainableWeight is null ? apply(call, hidden) : apply(call, hidden, trainableWeight);
    }

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (Call)vars[0];
        var hidden = (Tensor)vars[1];
        ctx.save_for_backward([hidden, call.Labels]);
        ctx.save_data("call", call);
        using Tensor weight = call.Weight();
        Tensor total = torch.zeros([], ScalarType.Float32, hidden.device);
        long rows = hidden.shape[0];
        using Tensor logits = torch.empty([Math.Min(call.ChunkRows, rows), weight.shape[0]], ScalarType.Float32, hidden.device);
        for (long start = 0; start < rows; start += call.ChunkRows)
        {
            using var scope = torch.NewDisposeScope();
            long count = Math.Min(call.ChunkRows, rows - start);
            Tensor chunk = Logits(hidden.narrow(0, start, count), weight, call.ComputeType, logits.narrow(0, 0, count));
            if (call.Softcap is { } cap)
            {
                chunk.div_(cap).tanh_().mul_(cap);
            }
            // torch's fused log-softmax and NLL: the same sum of logsumexp(z) - z[y], in one pass over the chunk.
            total.add_(nn.functional.cross_entropy(chunk, call.Labels.narrow(0, start, count), reduction: nn.Reduction.Sum));
        }
        return total;
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        // The scope first: the handles get_saved_variables makes, and the gradient's (TorchSharp hands backward a new handle
        // it never frees), are this backward's to dispose rather than the .NET finalizer's.
        using var scope = torch.NewDisposeScope();
        using Tensor gradHandle = gradOutput;
        var call = (Call)ctx.get_data("call");
        List<Tensor> saved = ctx.get_saved_variables();
        Tensor hidden = saved[0], labels = saved[1];
        using Tensor weight = call.Weight();
        Tensor gradHidden = torch.empty_like(hidden);
        Tensor? gradWeight = call.WeightTrains ? torch.zeros(weight.shape, ScalarType.Float32, weight.device) : null;
        long rows = hidden.shape[0];
        Tensor logits = torch.empty([Math.Min(call.ChunkRows, Math.Max(1, rows)), weight.shape[0]], ScalarType.Float32, hidden.device);
        for (long start = 0; start < rows; start += call.ChunkRows)
        {
            using var chunkScope = torch.NewDisposeScope();
            long count = Math.Min(call.ChunkRows, rows - start);
            Tensor h = hidden.narrow(0, start, count);
            // d loss / d logits = softmax(logits) - onehot(label), scaled by the upstream gradient.
            Tensor chunk = Logits(h, weight, call.ComputeType, logits.narrow(0, 0, count));
            Tensor? capped = null;
            if (call.Softcap is { } cap)
            {
                capped = chunk.div(cap).tanh_();
                chunk.copy_(capped).mul_(cap);
            }
            Tensor probabilities = chunk.softmax(1);
            Tensor target = labels.narrow(0, start, count).unsqueeze(1);
            probabilities.scatter_(1, target, probabilities.gather(1, target) - 1.0);
            probabilities.mul_(gradOutput);
            if (capped is not null)
            {
                // Through c · tanh(z / c): d/dz = 1 - tanh²(z / c).
                probabilities.mul_(capped.mul_(capped).neg_().add_(1.0));
            }
            Tensor gradLogits = probabilities.to_type(call.ComputeType);
            gradHidden.narrow(0, start, count).copy_(gradLogits.matmul(weight));
            gradWeight?.add_(probabilities.t().matmul(h));
        }
        var result = new List<Tensor> { null!, gradHidden.MoveToOuterDisposeScope() };
        if (gradWeight is not null)
        {
            result.Add(gradWeight.MoveToOuterDisposeScope());
        }
        return result;
    }

    /// <summary>Float32 logits of one chunk, written into <paramref name="buffer"/> so each chunk reuses one allocation.</summary>
    private static Tensor Logits(Tensor hidden, Tensor weight, ScalarType computeType, Tensor buffer)
    {
        using Tensor input = hidden.to_type(computeType);
        using Tensor logits = nn.functional.linear(input, weight);
        return buffer.copy_(logits);
    }

    private sealed record Call(Tensor Labels, Func<Tensor> Weight, ScalarType ComputeType, long ChunkRows, bool WeightTrains, double? Softcap);
}
