using Federated.Training.Lora;
using Federated.Training.Model;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class ChunkedLossTests
{
    [Theory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(1000, false)]
    [InlineData(4, true)]
    public void SummedTokenLoss_Chunked_EqualsWholeLogitsLossAndGradients(int chunkTokens, bool tied)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64, tieWordEmbeddings: tied), seed: 41, initStd: 0.1);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        model.AddLora(new LoraSettings(Rank: 4, TargetModules: LoraSettings.AllProjections, InitSeed: 2, FreezeA: false));
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 3));
        model.LossChunkTokens = chunkTokens;

        var whole = TrainingGradients.Compute(model, seed: 1, TrainingGradients.WholeLoss);
        var chunked = TrainingGradients.Compute(model, seed: 1);

        Assert.Equal(whole.Loss, chunked.Loss, 4);
        TrainingGradients.AssertEqual(whole.Grads, chunked.Grads, 2e-6);
    }

    [Fact]
    public void SummedTokenLoss_FullFineTuning_GivesTheHeadItsWholeLossGradient()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 42, initStd: 0.1);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        model.SetBaseTrainable(true);
        model.LossChunkTokens = 5;

        var whole = TrainingGradients.Compute(model, seed: 1, TrainingGradients.WholeLoss);
        var chunked = TrainingGradients.Compute(model, seed: 1);

        Assert.Contains("lm_head.weight", chunked.Grads.Keys);
        Assert.Equal(whole.Loss, chunked.Loss, 4);
        TrainingGradients.AssertEqual(whole.Grads, chunked.Grads, 2e-6);
    }
}
