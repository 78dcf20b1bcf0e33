using Federated.Aggregation.Privacy;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class DpSgdTrainerTests
{
    private static readonly int[] s_sentence = [5, 9, 2, 33, 17, 8, 40, 1, 12, 60];

    [Fact]
    public void AccumulateClipped_OneHugeExample_ItsContributionIsExactlyC()
    {
        using var dir = new TempDirectory();
        using var model = TrainableLora(dir, initSeed: 7, bSeed: 5);
        var records = PerExampleGradientsTests.s_records;
        const double clip = 0.5;
        using var capture = PerExampleCapture.Attach(model);

        // The middle record's loss weighted by 1e4 gives it a gradient far above C; the others are left below C.
        double[] unclippedNorms = records.Select((r, i) => Norm(Sum(model, capture, [r], 1e9, [i == 1 ? 1e4 : 1.0]))).ToArray();
        Assert.True(unclippedNorms[1] > 100 * clip, $"the huge example's norm is only {unclippedNorms[1]}");
        double small = Math.Min(unclippedNorms[0], unclippedNorms[2]);
        double scale = 0.5 * clip / Math.Max(unclippedNorms[0], unclippedNorms[2]);

        float[] all = Sum(model, capture, records, clip, [scale, 1e4, scale]);
        float[] withoutHuge = Sum(model, capture, [records[0], records[2]], clip, [scale, scale]);
        float[] hugeAlone = Sum(model, capture, [records[1]], clip, [1e4]);

        // Clipped to C (up to Opacus's 1e-6 in the denominator), and the sum is exactly the sum of the contributions.
        Assert.InRange(Norm(hugeAlone), clip * (1 - 1e-5), clip);
        float[] difference = all.Zip(withoutHuge, (a, b) => a - b).ToArray();
        Assert.InRange(Norm(difference), clip * (1 - 1e-4), clip * (1 + 1e-4));
        double worst = difference.Zip(hugeAlone, (a, b) => Math.Abs(a - b)).Max() / hugeAlone.Max(v => Math.Abs(v));
        Assert.True(worst < 1e-4, $"the huge example's contribution differs by {worst}");
        // Examples below C pass unchanged: their sum alone has the unclipped norms' scale.
        Assert.True(small > 0);
        Assert.True(Norm(withoutHuge) <= clip, $"two examples each below C/2 sum to {Norm(withoutHuge)}");
    }

    [Fact]
    public void AccumulateClipped_HugeExamplesAtManyScales_NeverAboveC()
    {
        // A clipped contribution above C is a sensitivity above the one the accountant prices. With float32 norms and
        // Opacus's factor alone one CI run measured 0.50000000421 for C = 0.5; each record at each scale is checked here.
        using var dir = new TempDirectory();
        using var model = TrainableLora(dir, initSeed: 11, bSeed: 13);
        using var capture = PerExampleCapture.Attach(model);
        foreach (double clip in (double[])[0.5, 1.0, 3.0])
        {
            foreach (double weight in (double[])[3e2, 1e3, 7e3, 1e4, 1e5])
            {
                for (int i = 0; i < PerExampleGradientsTests.s_records.Length; i++)
                {
                    double norm = Norm(Sum(model, capture, [PerExampleGradientsTests.s_records[i]], clip, [weight]));
                    Assert.True(norm <= clip, $"record {i} at weight {weight}: clipped norm {norm:R} above C = {clip}");
                    Assert.True(norm >= clip * (1 - 1e-5), $"record {i} at weight {weight}: clipped norm {norm:R} far below C = {clip}");
                }
            }
        }
    }

    [Fact]
    public void NoisyMean_ZeroSums_HasThePlannedVariance()
    {
        var privacy = new DpSgdOptions { ExpectedBatchSize = 5, NoiseMultiplier = 1.3, MaxGradNorm = 0.7, Delta = 1e-5 };
        using var scope = torch.NewDisposeScope();
        Tensor[] sums = [torch.zeros([300, 1000]), torch.zeros([1000, 100])];

        LoraTrainer.NoisyMean(sums, privacy, PoissonSamplerTests.Seeded("noise"));

        double[] values = sums.SelectMany(s => s.data<float>().ToArray()).Select(v => (double)v).ToArray();
        double mean = values.Average();
        double variance = values.Sum(v => (v - mean) * (v - mean)) / (values.Length - 1);
        // N(0, (z C)^2) on the sum, then / expected batch: sd 1.3 * 0.7 / 5 = 0.182. With 400,000 draws the mean's standard
        // error is 2.9e-4 and the variance's relative standard error sqrt(2 / 400000) = 0.22%; bounds are four of them.
        double sd = 1.3 * 0.7 / 5;
        Assert.InRange(mean, -4 * sd / Math.Sqrt(values.Length), 4 * sd / Math.Sqrt(values.Length));
        Assert.InRange(variance / (sd * sd), 1 - 0.009, 1 + 0.009);
        // Gaussian shape: 68.27% within one sd (binomial standard error 0.074%).
        double within = values.Count(v => Math.Abs(v) <= sd) / (double)values.Length;
        Assert.InRange(within, 0.6827 - 0.003, 0.6827 + 0.003);
    }

    [Fact]
    public void TrainPrivate_SmallNoise_LowersLossAndReportsTheAccountantsEpsilon()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 21, initStd: 0.1);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        model.AddLora(new LoraSettings(Rank: 8, Alpha: 16, TargetModules: LoraSettings.AllProjections, InitSeed: 3));
        TokenizedExample[] records = Enumerable.Range(0, 8)
            .Select(i => PerExampleGradientsTests.Example(s_sentence[..(6 + i % 5)], promptTokens: 0)).ToArray();
        var before = ModelEvaluator.Evaluate(model, [TokenBatcher.Collate(records, 0)]);
        var privacy = new DpSgdOptions
        {
            ExpectedBatchSize = 4,
            NoiseMultiplier = 0.05,
            MaxGradNorm = 1.0,
            Delta = 1e-5,
            Randomness = new AesCtrRandomSource("training-tests/train", new byte[16]),
        };
        var reports = new List<TrainingProgress>();

        TrainingResult result = new LoraTrainer().TrainPrivate(model, records, padId: 0,
            new TrainerOptions { Steps = 30, LearningRate = 1e-2, Seed = 1 }, privacy, new Inline(reports.Add));
        var after = ModelEvaluator.Evaluate(model, [TokenBatcher.Collate(records, 0)]);

        Assert.True(after.MeanLoss < before.MeanLoss * 0.7, $"loss {before.MeanLoss} -> {after.MeanLoss}");
        Assert.Equal(30, reports.Count);
        var accountant = new RecordLevelAccountant(0.5, 0.05, 1e-5);
        for (int step = 1; step <= 30; step++)
        {
            Assert.Equal(accountant.Epsilon(step), reports[step - 1].RecordEpsilon);
        }
        Assert.Equal(accountant.Epsilon(30), result.RecordEpsilon);
        Assert.Equal(0.5, result.SamplingRate);
        // FFA-LoRA by default: A stays where it was.
        var delta = result.After!.Subtract(result.Before!);
        Assert.All(delta.Tensors.Where(t => t.Name.Contains("lora_A")), t => Assert.All(t.Data, v => Assert.Equal(0f, v)));
        Assert.Contains(result.FlatDelta(), v => v != 0f);
        Assert.Null(model.AllLinears().FirstOrDefault(l => l.Linear.PerExampleGradients is not null).Linear);
    }

    [Fact]
    public void TrainPrivate_NoRecordSampled_StepIsNoiseOnly()
    {
        using var dir = new TempDirectory();
        using var model = LoraTests.Load(dir, tied: false);
        model.AddLora(new LoraSettings(Rank: 2, TargetModules: ["q_proj"], InitSeed: 1));
        var records = PerExampleGradientsTests.s_records;
        // q = 1/3 and one step: at this seed the sample may or may not be empty; either way the step must run and be charged.
        var privacy = new DpSgdOptions { ExpectedBatchSize = 1, NoiseMultiplier = 1, MaxGradNorm = 1, Delta = 1e-5,
            Randomness = new AesCtrRandomSource("training-tests/empty", new byte[16]) };

        TrainingResult result = new LoraTrainer().TrainPrivate(model, records, 0, new TrainerOptions { Steps = 3 }, privacy);

        Assert.Equal(new RecordLevelAccountant(1.0 / 3, 1, 1e-5).Epsilon(3), result.RecordEpsilon!.Value, 12);
    }

    [Theory]
    [InlineData(4, 0.0, 1.0, 1e-5, "NoiseMultiplier")]
    [InlineData(4, double.PositiveInfinity, 1.0, 1e-5, "NoiseMultiplier")]
    [InlineData(4, 1.0, -1.0, 1e-5, "MaxGradNorm")]
    [InlineData(4, 1.0, double.NaN, 1e-5, "MaxGradNorm")]
    [InlineData(4, 1.0, 1.0, 1.0, "Delta")]
    [InlineData(4, 1.0, 1.0, 0.0, "Delta")]
    [InlineData(4, 1.0, 1.0, double.NaN, "Delta")]
    [InlineData(4, 1.0, 1.0, 1e-5, "ExpectedBatchSize", 3)]
    public void Validate_OutOfRange_NamesTheSetting(int batch, double z, double c, double delta, string name, int records = 10)
    {
        var privacy = new DpSgdOptions { ExpectedBatchSize = batch, NoiseMultiplier = z, MaxGradNorm = c, Delta = delta };
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => privacy.Validate(records));
        Assert.Equal(name, error.ParamName);
    }

    private static float[] Sum(LlamaForCausalLM model, PerExampleCapture capture, TokenizedExample[] records, double clip, double[] weights)
    {
        using var scope = torch.NewDisposeScope();
        Tensor[] sums = capture.Parameters.Select(p => torch.zeros_like(p)).ToArray();
        LoraTrainer.AccumulateClipped(model, capture, records, 0, clip, microBatchSize: 2, sums, weights);
        return sums.SelectMany(s => s.data<float>().ToArray()).ToArray();
    }

    /// <summary>The test model with a rank-4 LoRA on every projection, A and B both trained, B random, in training mode.</summary>
    private static LlamaForCausalLM TrainableLora(TempDirectory dir, long initSeed, int bSeed)
    {
        LlamaForCausalLM model = LoraTests.Load(dir, tied: false);
        model.AddLora(new LoraSettings(Rank: 4, TargetModules: LoraSettings.AllProjections, InitSeed: initSeed, FreezeA: false));
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: bSeed));
        model.train();
        return model;
    }

    private static double Norm(float[] values) => Math.Sqrt(values.Sum(v => (double)v * v));

    private sealed class Inline(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
