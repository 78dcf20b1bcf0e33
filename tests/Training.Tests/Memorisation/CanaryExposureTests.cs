using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Memorisation;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using TorchSharp;

namespace Federated.Training.Tests.Memorisation;

[Collection(TorchCollection.Name)]
public sealed class CanaryExposureTests
{
    [Theory]
    [InlineData(1e6, 1, 19.931568569324174)] // the top of a 10^6 space: log2 10^6
    [InlineData(1024, 32, 5)]               // Carlini et al. 2019, Def. 4.1: log2 1024 - log2 32
    [InlineData(1024, 1024, 0)]             // ranked last: nothing exposed
    public void Exposure_KnownRanks_MatchesDefinition(double space, double rank, double expected)
    {
        Assert.Equal(expected, CanaryExposure.Exposure(space, rank), 12);
    }

    [Fact]
    public void Exposure_RankOutsideSpace_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => CanaryExposure.Exposure(100, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => CanaryExposure.Exposure(100, 101));
    }

    [Fact]
    public void SampledExposure_CountsCandidatesAtOrBelowAndTheCanaryItself()
    {
        // k = 1 candidate (0.5) at or below 1.0 among S = 3: -log2((1 + 1) / (3 + 1)) = 1.
        Assert.Equal(1.0, CanaryExposure.SampledExposure(1.0, [0.5, 2.0, 3.0], out int k), 12);
        Assert.Equal(1, k);
        // Beating all S = 7 samples gives the largest measurable value, log2(8) = 3, never infinity.
        Assert.Equal(3.0, CanaryExposure.SampledExposure(0.1, [1, 2, 3, 4, 5, 6, 7], out k), 12);
        Assert.Equal(0, k);
        // Ties count against the canary (conservative).
        Assert.Equal(0.0, CanaryExposure.SampledExposure(1.0, [1.0, 1.0, 1.0], out k), 12);
    }

    [Fact]
    public void RandomSecret_DefaultFormat_SixSpaceSeparatedDigits()
    {
        CanaryFormat format = CanaryFormat.Default;
        string secret = format.RandomSecret();

        Assert.Matches("^[0-9]( [0-9]){5}$", secret);
        Assert.Equal("my secret code is " + secret, format.Text(secret));
        Assert.Equal(6 * Math.Log2(10), format.SpaceBits, 12);
        IReadOnlyList<string> candidates = CanaryExposure.SampleCandidates(format, 50, [secret]);
        Assert.Equal(50, candidates.Count);
        Assert.DoesNotContain(secret, candidates);
    }

    [Fact]
    public void LogPerplexities_TinyModel_EqualsEvaluatorSummedLossInBits()
    {
        string directory = Path.Combine(Path.GetTempPath(), "federated-canary-" + Guid.NewGuid().ToString("N"));
        try
        {
            int vocab = ByteLevelTokenizerWriter.Write(directory);
            TinyLlamaFactory.Write(directory, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 3, initStd: 0.1);
            using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(directory);
            using LlamaForCausalLM model = LlamaForCausalLM.FromPretrained(directory, torch.CPU);
            CanaryFormat format = CanaryFormat.Default;
            string[] secrets = ["4 7 1 9 3 8", "0 0 0 0 0 0", "9 1 2 8 3 7"];

            double[] bits = CanaryExposure.LogPerplexities(model, tokenizer, format, secrets, batchSize: 2);

            // The same sums one at a time through the trainer's evaluator: mean loss (nats) x labelled tokens / ln 2.
            for (int i = 0; i < secrets.Length; i++)
            {
                string line = JsonSerializer.Serialize(new Dictionary<string, string> { ["prompt"] = format.Prefix, ["completion"] = secrets[i] });
                JsonlDataset one = JsonlDataset.Parse([line], "one", tokenizer);
                EvaluationResult result = ModelEvaluator.Evaluate(model, [TokenBatcher.Collate(one.Examples, tokenizer.PadId)]);
                Assert.Equal(result.MeanLoss * result.Tokens / Math.Log(2), bits[i], 3);
            }
            Assert.NotEqual(bits[0], bits[1]);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
