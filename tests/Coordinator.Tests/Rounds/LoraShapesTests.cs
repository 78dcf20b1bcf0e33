using Federated.Coordinator.Rounds;
using Federated.Training.Lora;
using Federated.Training.Model;
using TorchSharp;

namespace Federated.Coordinator.Tests.Rounds;

/// <summary>The initial adapter built from config.json alone equals the one a loaded model makes, shapes and values.</summary>
[Collection(TorchCollection.Name)]
public sealed class LoraShapesTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string, int, int, int> Architectures => new()
    {
        // name, attention heads, key/value heads (GQA when fewer), head_dim (decoupled from hidden / heads when not 16)
        { "mha", 4, 4, 16 },
        { "gqa", 4, 2, 16 },
        { "gqa-narrow-heads", 4, 1, 8 },
    };

    [Theory]
    [MemberData(nameof(Architectures))]
    public void GlobalAdapterCreate_FromConfigOnly_EqualsTheLoadedModelsAdapter(string name, int heads, int kvHeads, int headDim)
    {
        string model = _dir.File(name);
        LlamaConfig config = TinyLlamaFactory.DefaultConfig() with { NumAttentionHeads = heads, NumKeyValueHeads = kvHeads, HeadDim = headDim, IntermediateSize = 96 };
        TinyLlamaFactory.Write(model, config, seed: 5);
        var settings = new LoraSettings(Rank: 3, Alpha: 6, TargetModules: LoraSettings.AllProjections, InitSeed: 1234, FreezeA: true);

        GlobalAdapter fromConfig = GlobalAdapter.Create(model, settings);
        AdapterTensors loaded;
        using (LlamaForCausalLM llama = LlamaForCausalLM.FromPretrained(model, torch.CPU))
        {
            llama.AddLora(settings);
            loaded = llama.GetAdapter();
        }

        Assert.Equal(loaded.Names, fromConfig.Tensors.Names);
        foreach (NamedTensor expected in loaded.Tensors)
        {
            NamedTensor actual = fromConfig.Tensors[expected.Name];
            Assert.Equal(expected.Shape, actual.Shape);
            Assert.Equal(expected.Data, actual.Data);
        }
        Assert.Equal(loaded.OnlyB().ElementCount, fromConfig.BDimension);
        Assert.Equal(fromConfig.BDimension, LoraShapes.BDimension(config, settings));
        Assert.All(fromConfig.Tensors.OnlyB().Tensors, b => Assert.All(b.Data, v => Assert.Equal(0f, v)));
    }

    [Fact]
    public void Projections_GroupedQueryAttention_KeyAndValueOutputsFollowTheKvHeads()
    {
        LlamaConfig config = TinyLlamaFactory.DefaultConfig() with { HiddenSize = 64, NumAttentionHeads = 8, NumKeyValueHeads = 2, HeadDim = 4, IntermediateSize = 160, NumHiddenLayers = 1 };

        IReadOnlyList<LoraProjection> projections = LoraShapes.Projections(config, LoraSettings.AllProjections);

        Assert.Equal(
            [
                new LoraProjection("model.layers.0.self_attn.q_proj", 64, 32),
                new LoraProjection("model.layers.0.self_attn.k_proj", 64, 8),
                new LoraProjection("model.layers.0.self_attn.v_proj", 64, 8),
                new LoraProjection("model.layers.0.self_attn.o_proj", 32, 64),
                new LoraProjection("model.layers.0.mlp.gate_proj", 64, 160),
                new LoraProjection("model.layers.0.mlp.up_proj", 64, 160),
                new LoraProjection("model.layers.0.mlp.down_proj", 160, 64),
            ],
            projections);
        // r = 2 over q, v and down: (32 + 8 + 64) x 2.
        Assert.Equal(208, LoraShapes.BDimension(config, new LoraSettings(Rank: 2, TargetModules: ["q_proj", "v_proj", "down_proj"])));
    }

    [Fact]
    public void GlobalAdapterCreate_NoConfigJson_ThrowsFileNotFound()
    {
        Directory.CreateDirectory(_dir.File("empty"));

        Assert.Throws<FileNotFoundException>(() => GlobalAdapter.Create(_dir.File("empty"), new LoraSettings(Rank: 2)));
    }
}
