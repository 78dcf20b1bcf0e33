using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Precision;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class ActivationCheckpointTests
{
    [Theory]
    [InlineData(false, 0.0, false)]
    [InlineData(true, 0.0, false)]
    [InlineData(false, 0.3, false)]
    [InlineData(false, 0.0, true)]
    public void SummedTokenLoss_Checkpointed_EqualsPlainLossAndGradients(bool freezeA, double dropout, bool tied)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64, tieWordEmbeddings: tied), seed: 31, initStd: 0.1);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        model.AddLora(new LoraSettings(Rank: 4, Alpha: 8, Dropout: dropout, TargetModules: LoraSettings.AllProjections, InitSeed: 5, FreezeA: freezeA));
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 6));

        model.CheckpointActivations = false;
        var plain = TrainingGradients.Compute(model, seed: 7);
        model.CheckpointActivations = true;
        var checkpointed = TrainingGradients.Compute(model, seed: 7);

        Assert.Equal(plain.Loss, checkpointed.Loss, 6);
        // Recomputation runs the same kernels on the same inputs, so the gradients agree to float32 rounding.
        TrainingGradients.AssertEqual(plain.Grads, checkpointed.Grads, 1e-7);
    }

    [Fact]
    public void SummedTokenLoss_CheckpointedOverInt8Base_EqualsPlainGradients()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 32, initStd: 0.1);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path, null,
            ModelLoadOptions.Float32 with { Quantization = BaseQuantization.Int8 });
        model.AddLora(new LoraSettings(Rank: 4, TargetModules: LoraSettings.AllProjections, InitSeed: 5, FreezeA: false));
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 6));

        model.CheckpointActivations = false;
        var plain = TrainingGradients.Compute(model, seed: 7);
        model.CheckpointActivations = true;
        var checkpointed = TrainingGradients.Compute(model, seed: 7);

        Assert.Equal(plain.Loss, checkpointed.Loss, 6);
        TrainingGradients.AssertEqual(plain.Grads, checkpointed.Grads, 1e-7);
    }

    [Fact]
    public void CheckpointActivations_Default_OnlyAboveOneBillionParameters()
    {
        // Llama-3.2-1B's config.json: 1,235,814,400 values (embedding tied to the head).
        var llama1B = TinyLlamaFactory.DefaultConfig() with
        {
            VocabSize = 128256, HiddenSize = 2048, IntermediateSize = 8192, NumHiddenLayers = 16, NumAttentionHeads = 32,
            NumKeyValueHeads = 8, HeadDim = 64, TieWordEmbeddings = true,
        };

        var qwen05B = llama1B with
        {
            ModelType = "qwen2", VocabSize = 151936, HiddenSize = 896, IntermediateSize = 4864, NumHiddenLayers = 24, NumAttentionHeads = 14,
            NumKeyValueHeads = 2, QkvBias = true,
        };
        var bf16 = new WeightStorage(ScalarType.BFloat16, ScalarType.BFloat16, BaseQuantization.None);
        var lora = new LoraSettings(TargetModules: LoraSettings.AllProjections);

        using var model = new LlamaForCausalLM(TinyLlamaFactory.DefaultConfig());

        Assert.False(model.CheckpointActivations);
        Assert.Equal(1_235_814_400L, ModelMemoryEstimate.ParameterCount(llama1B));
        Assert.True(ModelMemoryEstimate.CheckpointByDefault(llama1B, bf16, workload: null));
        // Qwen2.5-0.5B's config.json: 494,032,768 values; at 2 x 256 tokens its activations outweigh its bf16 weights.
        Assert.Equal(494_032_768L, ModelMemoryEstimate.ParameterCount(qwen05B));
        Assert.False(ModelMemoryEstimate.CheckpointByDefault(qwen05B, bf16, workload: null));
        Assert.True(ModelMemoryEstimate.CheckpointByDefault(qwen05B, bf16, new TrainingWorkload(2, 256, lora)));
        Assert.False(ModelMemoryEstimate.CheckpointByDefault(qwen05B, bf16, new TrainingWorkload(1, 32, lora)));
    }
}
