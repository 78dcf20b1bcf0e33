using Federated.Training.Model;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class LlamaForCausalLMTests
{
    private static readonly long[] s_ids = [3, 17, 42, 5, 9, 61, 0, 23, 8, 14];

    private static LlamaConfig Config(bool tied) => TinyLlamaFactory.DefaultConfig(vocabSize: 64, tieWordEmbeddings: tied);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Forward_FactoryModel_MatchesPlainReference(bool tied)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, Config(tied), seed: 7);
        RandomizeNorms(dir.Path);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();

        Tensor logits = model.forward(torch.tensor(s_ids).unsqueeze(0));
        Tensor expected = ReferenceDecoder.Logits(dir.Path, s_ids);

        Assert.Equal([1L, s_ids.Length, 64L], logits.shape);
        Assert.True(logits[0].allclose(expected, rtol: 1e-4, atol: 1e-5), $"max diff {(logits[0] - expected).abs().max().item<float>()}");
        Assert.Equal(tied, !model.named_parameters().Any(p => p.name == "lm_head.weight"));
    }

    [Fact]
    public void Forward_Qwen2WithBiasesAndLlama3Rope_MatchesPlainReference()
    {
        using var dir = new TempDirectory();
        var config = Config(false) with
        {
            ModelType = "qwen2",
            QkvBias = true,
            // A short original context puts this head size's frequencies in all three llama3 bands.
            RopeScaling = new RopeScaling("llama3", 4.0, 1.0, 4.0, 64),
        };
        TinyLlamaFactory.Write(dir.Path, config, seed: 8);
        torch.manual_seed(12);
        RewriteWeights(dir.Path, (name, w) => name.EndsWith(".bias", StringComparison.Ordinal) ? torch.randn_like(w) * 0.5 : w);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();

        Tensor logits = model.forward(torch.tensor(s_ids).unsqueeze(0));
        Tensor expected = ReferenceDecoder.Logits(dir.Path, s_ids);

        Assert.Contains(model.named_parameters(), p => p.name == "model.layers.0.self_attn.k_proj.bias");
        Assert.DoesNotContain(model.named_parameters(), p => p.name == "model.layers.0.self_attn.o_proj.bias");
        Assert.True(logits[0].allclose(expected, rtol: 1e-4, atol: 1e-5), $"max diff {(logits[0] - expected).abs().max().item<float>()}");
    }

    [Theory]
    [InlineData("mistral", 4, 0)]
    [InlineData("qwen2", 3, 1)]
    public void Forward_BeyondSlidingWindow_MatchesPlainReference(string modelType, int window, int maxWindowLayers)
    {
        using var dir = new TempDirectory();
        var config = Config(false) with { ModelType = modelType, QkvBias = modelType == "qwen2", SlidingWindow = window, MaxWindowLayers = maxWindowLayers };
        TinyLlamaFactory.Write(dir.Path, config, seed: 13, initStd: 0.2);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();

        Tensor logits = model.forward(torch.tensor(s_ids).unsqueeze(0));
        Tensor expected = ReferenceDecoder.Logits(dir.Path, s_ids);
        Tensor unwindowed = ReferenceDecoder.Logits(WithoutWindow(dir, config), s_ids);

        Assert.Equal(window, LlamaConfig.Load(dir.Path).SlidingWindow);
        Assert.True(logits[0].allclose(expected, rtol: 1e-4, atol: 1e-5), $"max diff {(logits[0] - expected).abs().max().item<float>()}");
        // The window matters: beyond it the logits differ from full attention, within it they agree.
        Assert.False(logits[0].allclose(unwindowed, rtol: 1e-3, atol: 1e-4));
        Assert.True(logits[0, ..window].allclose(unwindowed[..window], rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void Forward_ChangingLaterToken_LeavesEarlierLogitsUnchanged()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, Config(false), seed: 3);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();
        long[] changed = (long[])s_ids.Clone();
        changed[6] = 50;

        Tensor a = model.forward(torch.tensor(s_ids).unsqueeze(0));
        Tensor b = model.forward(torch.tensor(changed).unsqueeze(0));

        Assert.True(a[.., ..6].allclose(b[.., ..6], rtol: 0, atol: 1e-6));
        Assert.False(a[.., 6..].allclose(b[.., 6..], rtol: 0, atol: 1e-3));
    }

    [Fact]
    public void Forward_RightPadding_RealPositionsMatchUnpadded()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, Config(true), seed: 4);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();
        Tensor ids = torch.tensor(new long[] { 1, 2, 3, 4, 5, 6, 1, 2, 3, 0, 0, 0 }, [2, 6]);
        Tensor mask = torch.tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 }, [2, 6]);

        Tensor padded = model.Forward(ids, mask);
        Tensor alone = model.forward(torch.tensor(new long[] { 1, 2, 3 }).unsqueeze(0));

        Assert.True(padded[1, ..3].allclose(alone[0], rtol: 1e-5, atol: 1e-5));
        Assert.False(torch.isnan(padded).any().item<bool>());
    }

    [Fact]
    public void Forward_GroupedQueryAttention_EqualsMultiHeadWithRepeatedKvWeights()
    {
        using var dir = new TempDirectory();
        var gqa = Config(false);
        TinyLlamaFactory.Write(dir.Sub("gqa"), gqa, seed: 5);
        int groups = gqa.NumAttentionHeads / gqa.NumKeyValueHeads;
        var mha = gqa with { NumKeyValueHeads = gqa.NumAttentionHeads };
        Directory.CreateDirectory(dir.Sub("mha"));
        File.WriteAllText(Path.Combine(dir.Sub("mha"), "config.json"), mha.ToJson());
        using (var scope = torch.NewDisposeScope())
        using (var checkpoint = SafeTensorsCheckpoint.Open(dir.Sub("gqa")))
        {
            var tensors = checkpoint.Names.Select(name =>
            {
                Tensor w = checkpoint.ReadFloat32(name);
                if (name.Contains("k_proj") || name.Contains("v_proj"))
                {
                    // Key/value head j serves query heads j*groups .. j*groups+groups-1: repeat each head's rows in place.
                    w = w.view(gqa.NumKeyValueHeads, gqa.HeadDim, -1).repeat_interleave(groups, 0).reshape(-1, gqa.HiddenSize);
                }
                return (name, w, SafeTensorDType.F32);
            }).ToList();
            SafeTensorsWriter.Write(Path.Combine(dir.Sub("mha"), "model.safetensors"), tensors);
        }
        using var gqaModel = LlamaForCausalLM.FromPretrained(dir.Sub("gqa"));
        using var mhaModel = LlamaForCausalLM.FromPretrained(dir.Sub("mha"));
        using var s = torch.NewDisposeScope();

        Tensor input = torch.tensor(s_ids).unsqueeze(0);
        Tensor a = gqaModel.forward(input);
        Tensor b = mhaModel.forward(input);

        Assert.True(a.allclose(b, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void FromPretrained_MissingTensor_NamesIt()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, Config(false), seed: 1);
        RewriteWeights(dir.Path, (name, w) => name == "model.layers.1.mlp.up_proj.weight" ? null : w);

        var e = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(dir.Path));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", e.Message);
    }

    [Fact]
    public void FromPretrained_MisshapedTensor_NamesIt()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, Config(false), seed: 1);
        RewriteWeights(dir.Path, (name, w) => name == "model.layers.0.self_attn.k_proj.weight" ? w[..8] : w);

        var e = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(dir.Path));
        Assert.Contains("model.layers.0.self_attn.k_proj.weight", e.Message);
        Assert.Contains("[8, 64]", e.Message);
    }

    [Theory]
    [InlineData(SafeTensorDType.BF16, ScalarType.BFloat16)]
    [InlineData(SafeTensorDType.F16, ScalarType.Float16)]
    public void FromPretrained_HalfCheckpointAtFp32_KeepsTheStoredTypeAndValues(SafeTensorDType dtype, ScalarType stored)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Sub("f32"), Config(false), seed: 2);
        TinyLlamaFactory.Write(dir.Sub("half"), Config(false), seed: 2, dtype);
        using var f32 = LlamaForCausalLM.FromPretrained(dir.Sub("f32"));
        using var half = LlamaForCausalLM.FromPretrained(dir.Sub("half"));
        using var scope = torch.NewDisposeScope();

        Tensor exact = f32.BaseWeights().First(w => w.Name == "model.layers.0.self_attn.q_proj.weight").Tensor;
        Tensor loaded = half.BaseWeights().First(w => w.Name == "model.layers.0.self_attn.q_proj.weight").Tensor;

        // No float32 copy of a frozen weight: projections, embedding and head stay in the checkpoint's type.
        Assert.All(half.BaseWeights().Where(w => !w.Name.Contains("norm", StringComparison.Ordinal)), w => Assert.Equal(stored, w.Tensor.dtype));
        Assert.Equal(ScalarType.Float32, half.Storage.ComputeType);
        Assert.True(loaded.eq(exact.to_type(stored)).all().item<bool>());
        // Each matmul upcasts the stored weight, so fp32 logits equal those of a float32 copy of the same values.
        Tensor input = torch.tensor(s_ids).unsqueeze(0);
        Assert.True(half.forward(input).allclose(ReferenceDecoder.Logits(dir.Sub("half"), s_ids).unsqueeze(0), rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void FromPretrained_NonLlamaConfig_IsClearError()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.Sub("config.json"), """{"model_type": "bert", "vocab_size": 10}""");

        var e = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(dir.Path));
        Assert.Contains("bert", e.Message);
    }

    [Fact]
    public void Loss_IgnoresMinus100Labels()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(9);
        Tensor logits = torch.randn(1, 4, 5);
        Tensor labels = torch.tensor(new long[] { -100, 2, -100, 4 }).unsqueeze(0);

        double loss = LlamaForCausalLM.Loss(logits, labels).item<float>();

        Tensor logp = logits[0].log_softmax(-1);
        double expected = -(logp[1, 2].item<float>() + logp[3, 4].item<float>()) / 2;
        Assert.Equal(expected, loss, 5);
    }

    private static string WithoutWindow(TempDirectory dir, LlamaConfig config)
    {
        string full = dir.Sub("full");
        Directory.CreateDirectory(full);
        File.Copy(Path.Combine(dir.Path, "model.safetensors"), Path.Combine(full, "model.safetensors"));
        File.WriteAllText(Path.Combine(full, "config.json"), (config with { SlidingWindow = null }).ToJson());
        return full;
    }

    /// <summary>Factory norms are 1; random ones make the reference comparison sensitive to the norm weights.</summary>
    private static void RandomizeNorms(string directory)
    {
        torch.manual_seed(11);
        RewriteWeights(directory, (name, w) => name.EndsWith("norm.weight", StringComparison.Ordinal) ? torch.rand_like(w) + 0.5 : w);
    }

    internal static void RewriteWeights(string directory, Func<string, Tensor, Tensor?> change)
    {
        using var scope = torch.NewDisposeScope();
        var tensors = new List<(string, Tensor, SafeTensorDType)>();
        using (var checkpoint = SafeTensorsCheckpoint.Open(directory))
        {
            foreach (string name in checkpoint.Names)
            {
                Tensor? w = change(name, checkpoint.ReadFloat32(name));
                if (w is not null)
                {
                    tensors.Add((name, w, SafeTensorDType.F32));
                }
            }
        }
        SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"), tensors);
    }
}
