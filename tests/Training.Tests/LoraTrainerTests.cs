using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Trainer;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class LoraTrainerTests
{
    [Fact]
    public void Train_MemorisationTask_LowersLoss()
    {
        using var dir = new TempDirectory();
        // A wider init than transformers' 0.02 lets a frozen head reach confident logits, so memorising is possible.
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 21, initStd: 0.1);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        model.AddLora(new LoraSettings(Rank: 8, Alpha: 16, TargetModules: LoraSettings.AllProjections, InitSeed: 3));
        var batches = new[] { Batch([[5, 9, 2, 33, 17, 8, 40, 1, 12, 60], [7, 7, 3, 21, 50, 4, 4, 30, 11, 2]]) };
        var initial = ModelEvaluator.Evaluate(model, batches);
        var reports = new List<TrainingProgress>();

        var result = new LoraTrainer().Train(model, batches,
            new TrainerOptions { Steps = 40, LearningRate = 1e-2, WarmupSteps = 2, Seed = 1 },
            new SyncProgress<TrainingProgress>(reports.Add));
        var final = ModelEvaluator.Evaluate(model, batches);

        Assert.True(final.MeanLoss < initial.MeanLoss * 0.3, $"loss {initial.MeanLoss} -> {final.MeanLoss}");
        Assert.Equal(Math.Exp(final.MeanLoss), final.Perplexity, 6);
        Assert.Equal(18, final.Tokens);
        Assert.Equal(40, reports.Count);
        Assert.Equal(Enumerable.Range(1, 40), reports.Select(r => r.Step));
        Assert.Equal(20L * 40, reports[^1].Tokens);
        Assert.Equal(0.0, reports[0].LearningRate);
        Assert.True(reports.All(r => double.IsFinite(r.Loss) && r.GradNorm >= 0));

        // FFA-LoRA: A never moves, so the update is entirely in B.
        var delta = result.After!.Subtract(result.Before!);
        Assert.All(delta.Tensors.Where(t => t.Name.Contains("lora_A")), t => Assert.All(t.Data, v => Assert.Equal(0f, v)));
        Assert.Equal(result.After.OnlyB().ElementCount, result.FlatDelta().Length);
        Assert.Contains(result.FlatDelta(), v => v != 0f);
    }

    [Fact]
    public void Train_AccumulatingTwoHalves_EqualsOneFullBatch()
    {
        using var dir = new TempDirectory();
        using var a = LoraTests.Load(dir, tied: true);
        using var b = LlamaForCausalLM.FromPretrained(dir.Path);
        var settings = new LoraSettings(Rank: 4, TargetModules: ["q_proj", "v_proj"], InitSeed: 5);
        a.AddLora(settings);
        b.AddLora(settings);
        int[] first = [1, 2, 3, 4, 5, 6], second = [9, 8, 7, 6, 5, 4];
        var options = new TrainerOptions { Steps = 1, LearningRate = 1e-2, ShuffleBatches = false, MaxGradNorm = 0 };

        new LoraTrainer().Train(a, [Batch([first, second])], options);
        new LoraTrainer().Train(b, [Batch([first]), Batch([second])], options with { GradientAccumulationSteps = 2 });

        float[] va = a.GetAdapter().Flatten(), vb = b.GetAdapter().Flatten();
        Assert.Equal(va.Length, vb.Length);
        Assert.True(va.Zip(vb, (x, y) => MathF.Abs(x - y)).Max() < 1e-6f);
        Assert.Contains(va, v => v != 0f);
    }

    [Fact]
    public void Step_Repeated_LiveTensorCountStaysFlat()
    {
        using var dir = new TempDirectory();
        using var model = LoraTests.Load(dir, tied: false);
        model.AddLora(new LoraSettings(Rank: 4, Dropout: 0.1, TargetModules: LoraSettings.AllProjections));
        var parameters = model.TrainableParameters().ToList();
        using var optimizer = TorchSharp.torch.optim.AdamW(parameters, 1e-3);
        var batch = Batch([[1, 2, 3, 4, 5], [6, 7, 8]]);
        model.train();
        // The first steps create AdamW's state; after that every step must release all it allocates.
        LoraTrainer.Step(model, optimizer, parameters, [batch], 1.0);
        LoraTrainer.Step(model, optimizer, parameters, [batch], 1.0);
        long live = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;

        for (int i = 0; i < 5; i++)
        {
            LoraTrainer.Step(model, optimizer, parameters, [batch, batch], 1.0);
        }

        Assert.Equal(live, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void Train_Cancelled_Throws()
    {
        using var dir = new TempDirectory();
        using var model = LoraTests.Load(dir, tied: false);
        model.AddLora(new LoraSettings(Rank: 2));
        using var cts = new CancellationTokenSource();
        cts.Cancel();

        Assert.Throws<OperationCanceledException>(() => new LoraTrainer().Train(model, [Batch([[1, 2, 3]])],
            new TrainerOptions { Steps = 5 }, cancellationToken: cts.Token));
    }

    [Fact]
    public void Train_NoTrainableParameters_Throws()
    {
        using var dir = new TempDirectory();
        using var model = LoraTests.Load(dir, tied: false);

        Assert.Throws<InvalidOperationException>(() => new LoraTrainer().Train(model, [Batch([[1, 2, 3]])], new TrainerOptions()));
    }

    [Fact]
    public void CosineWithWarmup_KnownValues()
    {
        Assert.Equal(0.0, LoraTrainer.CosineWithWarmup(0, 10, 110));
        Assert.Equal(0.5, LoraTrainer.CosineWithWarmup(5, 10, 110));
        Assert.Equal(1.0, LoraTrainer.CosineWithWarmup(10, 10, 110));
        Assert.Equal(0.5, LoraTrainer.CosineWithWarmup(60, 10, 110), 12);
        Assert.Equal(0.0, LoraTrainer.CosineWithWarmup(110, 10, 110), 12);
    }

    [Fact]
    public void Device_Unknown_Throws_AutoResolves()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => TrainingDevice.Resolve("tpu"));
        Assert.Equal(TorchSharp.torch.cuda.is_available() ? TorchSharp.DeviceType.CUDA : TorchSharp.DeviceType.CPU,
            TrainingDevice.Resolve("auto").type);
    }

    /// <summary>Right-padded causal-LM batch: labels are the next token, -100 on the last real position and padding.</summary>
    internal static TokenBatch Batch(int[][] rows)
    {
        int length = rows.Max(r => r.Length);
        var ids = new long[rows.Length * length];
        var labels = new long[rows.Length * length];
        var mask = new long[rows.Length * length];
        for (int r = 0; r < rows.Length; r++)
        {
            for (int i = 0; i < length; i++)
            {
                int at = r * length + i;
                bool real = i < rows[r].Length;
                ids[at] = real ? rows[r][i] : 0;
                mask[at] = real ? 1 : 0;
                labels[at] = i + 1 < rows[r].Length ? rows[r][i + 1] : TokenizedExample.IgnoreIndex;
            }
        }
        return new TokenBatch(ids, labels, mask, rows.Length, length);
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
