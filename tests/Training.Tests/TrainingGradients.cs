using Federated.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

/// <summary>One backward pass of a tiny batch, returning the loss and a copy of every trainable parameter's gradient by name.</summary>
internal static class TrainingGradients
{
    public static readonly long[,] Ids = { { 3, 17, 42, 5, 9, 61, 0, 23 }, { 8, 14, 2, 2, 33, 1, 0, 0 } };
    public static readonly long[,] Mask = { { 1, 1, 1, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 1, 0, 0 } };

    /// <summary>Labels are the next token; the last position and the padded ones are ignored.</summary>
    public static (double Loss, Dictionary<string, float[]> Grads) Compute(LlamaForCausalLM model, long seed,
        Func<LlamaForCausalLM, Tensor, Tensor, Tensor, Tensor>? loss = null)
    {
        loss ??= (m, ids, labels, mask) => m.SummedTokenLoss(ids, labels, mask);
        using var scope = torch.NewDisposeScope();
        foreach (var p in model.TrainableParameters())
        {
            p.grad?.zero_();
        }
        Tensor ids = torch.tensor(Ids);
        Tensor mask = torch.tensor(Mask);
        Tensor labels = torch.full(ids.shape, -100L, ScalarType.Int64);
        labels[.., ..^1] = ids[.., 1..];
        labels.masked_fill_(mask.eq(0), -100);
        labels[1, 5] = -100;
        torch.manual_seed(seed);
        model.train();
        Tensor value = loss(model, ids, labels, mask);
        value.backward();
        model.eval();
        var grads = model.named_parameters().Where(p => p.parameter.requires_grad)
            .ToDictionary(p => p.name, p => p.parameter.grad!.to_type(ScalarType.Float32).data<float>().ToArray());
        return (value.item<float>(), grads);
    }

    /// <summary>The loss through the materialized [tokens x vocabulary] logits and torch's cross_entropy.</summary>
    public static Tensor WholeLoss(LlamaForCausalLM model, Tensor ids, Tensor labels, Tensor mask) =>
        LlamaForCausalLM.SummedLoss(model.Forward(ids, mask), labels);

    public static void AssertEqual(Dictionary<string, float[]> expected, Dictionary<string, float[]> actual, double tolerance)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, values) in expected)
        {
            Assert.True(values.Any(v => v != 0), $"gradient of {name} is zero; the comparison would prove nothing");
            // Relative to the tensor's largest entry: float32 sums taken in another order differ in the last bits of small entries.
            double scale = values.Max(v => Math.Abs(v));
            double worst = values.Zip(actual[name], (a, b) => Math.Abs(a - b)).Max() / scale;
            Assert.True(worst <= tolerance, $"{name}: largest difference is {worst} of the largest gradient entry");
        }
    }
}
