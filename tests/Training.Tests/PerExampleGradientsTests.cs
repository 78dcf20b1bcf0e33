using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class PerExampleGradientsTests
{
    // Three records of different lengths (so two are padded in the batch); the second has an unlabelled prompt.
    internal static readonly TokenizedExample[] s_records =
    [
        Example([5, 9, 2, 33, 17, 8, 40, 1, 12, 60], promptTokens: 0),
        Example([7, 3, 21, 50, 4], promptTokens: 2),
        Example([11, 44, 6, 6, 29, 13, 2], promptTokens: 0),
    ];

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(false, true)]
    public void Take_EveryProjectionWithPadding_EqualsSeparateBackwardPerExample(bool freezeA, bool checkpoint)
    {
        using var dir = new TempDirectory();
        using var model = LoraTests.Load(dir, tied: false);
        model.CheckpointActivations = checkpoint;
        model.AddLora(new LoraSettings(Rank: 4, Alpha: 8, TargetModules: LoraSettings.AllProjections, InitSeed: 7, FreezeA: freezeA));
        // B = 0 would make every gradient of A zero; a random B makes the comparison of A meaningful.
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 3));
        model.train();

        float[][][] batched;
        IReadOnlyList<string> names;
        using (var capture = PerExampleCapture.Attach(model))
        using (var scope = torch.NewDisposeScope())
        {
            names = capture.Names;
            TokenBatch batch = TokenBatcher.Collate(s_records, padId: 0);
            var (ids, labels, mask) = LoraTrainer.ToTensors(batch, model.Device);
            capture.SetKeepMask(mask.to_type(ScalarType.Float32));
            model.SummedTokenLoss(ids, labels, mask).backward();
            Tensor[] taken = capture.Take();
            batched = taken.Select(t => Enumerable.Range(0, s_records.Length)
                .Select(i => t[i].contiguous().data<float>().ToArray()).ToArray()).ToArray();
        }

        // Every kind of projection, and A only when it trains.
        foreach (string kind in LoraSettings.AllProjections.Take(7))
        {
            Assert.Contains(names, n => n.Contains($".{kind}.lora_B", StringComparison.Ordinal));
            Assert.Equal(!freezeA, names.Any(n => n.Contains($".{kind}.lora_A", StringComparison.Ordinal)));
        }
        for (int i = 0; i < s_records.Length; i++)
        {
            Dictionary<string, float[]> alone = SeparateBackward(model, s_records[i]);
            for (int k = 0; k < names.Count; k++)
            {
                float[] expected = alone[names[k]];
                Assert.True(expected.Any(v => v != 0), $"{names[k]}: the reference gradient is zero; the comparison would prove nothing");
                double scale = expected.Max(v => Math.Abs(v));
                double worst = expected.Zip(batched[k][i], (a, b) => Math.Abs(a - b)).Max() / scale;
                Assert.True(worst <= 1e-5, $"example {i}, {names[k]}: largest difference is {worst} of the largest entry");
            }
        }
    }

    [Fact]
    public void Attach_TrainableBase_Throws()
    {
        using var dir = new TempDirectory();
        using var model = LoraTests.Load(dir, tied: false);
        model.AddLora(new LoraSettings(Rank: 2, TargetModules: ["q_proj"]));
        model.SetBaseTrainable(true);

        var error = Assert.Throws<InvalidOperationException>(() => PerExampleCapture.Attach(model));
        Assert.Contains("LoRA tensors only", error.Message);
    }

    /// <summary>The gradient of one record's summed token loss, run alone (no padding) through the ordinary autograd path.</summary>
    internal static Dictionary<string, float[]> SeparateBackward(LlamaForCausalLM model, TokenizedExample record)
    {
        using var scope = torch.NewDisposeScope();
        var parameters = model.AdapterParameters().Where(p => p.Parameter.requires_grad).ToList();
        foreach (var (_, p) in parameters)
        {
            p.grad?.zero_();
        }
        TokenBatch batch = TokenBatcher.Collate([record], padId: 0);
        var (ids, labels, mask) = LoraTrainer.ToTensors(batch, model.Device);
        model.SummedTokenLoss(ids, labels, mask).backward();
        return parameters.ToDictionary(p => p.Name, p => p.Parameter.grad!.data<float>().ToArray());
    }

    internal static TokenizedExample Example(int[] ids, int promptTokens)
    {
        var labels = new int[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            labels[i] = i + 1 < ids.Length && i + 1 >= promptTokens ? ids[i + 1] : TokenizedExample.IgnoreIndex;
        }
        return new TokenizedExample(ids, labels);
    }
}
