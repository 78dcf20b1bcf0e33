using System.Text.Json.Nodes;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class ModelFamilyTests
{
    private static readonly long[] s_ids = [3, 17, 42, 5, 9, 61, 0, 23, 8, 14];

    public static TheoryData<string> Families() => new(TinyFamilies.All);

    [Theory]
    [MemberData(nameof(Families))]
    public void Forward_TinyRandomCheckpoint_MatchesPlainReference(string family)
    {
        using var dir = new TempDirectory();
        WriteRandom(dir.Path, TinyFamilies.Config(family), seed: 21);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();

        Tensor logits = model.forward(torch.tensor(s_ids).unsqueeze(0));
        Tensor expected = ReferenceDecoder.Logits(dir.Path, s_ids);

        Assert.Equal([1L, s_ids.Length, 64L], logits.shape);
        Assert.True(logits[0].allclose(expected, rtol: 1e-4, atol: 1e-5), $"max diff {(logits[0] - expected).abs().max().item<float>()}");
    }

    [Theory]
    [InlineData("qwen3", "model.layers.1.self_attn.q_norm.weight", "[24]")]
    [InlineData("phi3", "model.layers.0.self_attn.qkv_proj.weight", "[128, 64]")]
    [InlineData("phi3", "model.layers.1.mlp.gate_up_proj.weight", "[256, 64]")]
    [InlineData("gemma2", "model.layers.0.pre_feedforward_layernorm.weight", "[64]")]
    [InlineData("gemma2", "model.layers.1.post_feedforward_layernorm.weight", "[64]")]
    public void FromPretrained_FamilyTensorMissing_NamesItAndItsShape(string family, string tensor, string shape)
    {
        using var dir = new TempDirectory();
        WriteRandom(dir.Path, TinyFamilies.Config(family), seed: 1);
        LlamaForCausalLMTests.RewriteWeights(dir.Path, (name, w) => name == tensor ? null : w);

        var e = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(dir.Path));
        Assert.Contains($"'{tensor}'", e.Message);
        Assert.Contains(shape, e.Message);
    }

    [Fact]
    public void Forward_Phi3LongRope_SwitchesToLongFactorsPastTheOriginalContext()
    {
        using var dir = new TempDirectory();
        var config = TinyFamilies.Config("phi3-longrope");
        WriteRandom(dir.Path, config, seed: 22);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);
        using var scope = torch.NewDisposeScope();

        // Six tokens fit the original context (short factors); the seventh moves every position to the long ones.
        Tensor six = model.forward(torch.tensor(s_ids[..6]).unsqueeze(0));
        Tensor seven = model.forward(torch.tensor(s_ids[..7]).unsqueeze(0));

        Assert.True(six[0].allclose(ReferenceDecoder.Logits(dir.Path, s_ids[..6]), rtol: 1e-4, atol: 1e-5));
        Assert.True(seven[0].allclose(ReferenceDecoder.Logits(dir.Path, s_ids[..7]), rtol: 1e-4, atol: 1e-5));
        Assert.False(seven[0, ..6].allclose(six[0], rtol: 1e-3, atol: 1e-4));
        Assert.Equal(Math.Sqrt(1 + Math.Log(64.0 / 6) / Math.Log(6)), config.RopeScaling!.AttentionFactor, 12);
    }

    [Theory]
    [InlineData("attn_logit_softcapping")]
    [InlineData("final_logit_softcapping")]
    [InlineData("query_pre_attn_scalar")]
    [InlineData("sliding_window")]
    public void Forward_Gemma2Feature_ChangesTheLogits(string key)
    {
        using var dir = new TempDirectory();
        var config = TinyFamilies.Config("gemma2");
        WriteRandom(dir.Sub("with"), config, seed: 23);
        var without = key switch
        {
            "attn_logit_softcapping" => config with { AttnLogitSoftcapping = null },
            "final_logit_softcapping" => config with { FinalLogitSoftcapping = null },
            "query_pre_attn_scalar" => config with { QueryPreAttnScalar = config.HeadDim },
            _ => config with { SlidingWindow = null },
        };
        Directory.CreateDirectory(dir.Sub("without"));
        File.Copy(Path.Combine(dir.Sub("with"), "model.safetensors"), Path.Combine(dir.Sub("without"), "model.safetensors"));
        File.WriteAllText(Path.Combine(dir.Sub("without"), "config.json"), without.ToJson());
        using var a = LlamaForCausalLM.FromPretrained(dir.Sub("with"));
        using var b = LlamaForCausalLM.FromPretrained(dir.Sub("without"));
        using var scope = torch.NewDisposeScope();
        Tensor input = torch.tensor(s_ids).unsqueeze(0);

        Tensor withFeature = a.forward(input);
        Tensor withoutFeature = b.forward(input);

        // Each feature must bend a random model's logits, or matching the reference would not test it.
        Assert.False(withFeature.allclose(withoutFeature, rtol: 1e-3, atol: 1e-3), $"{key} made no difference");
        Assert.True(withoutFeature[0].allclose(ReferenceDecoder.Logits(dir.Sub("without"), s_ids), rtol: 1e-4, atol: 1e-5));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Backward_EveryFamily_GivesEveryLoraBAGradient(string family)
    {
        using var model = new LlamaForCausalLM(TinyFamilies.Config(family));
        model.InitializeRandom(24, std: 0.2);
        model.AddLora(new LoraSettings(Rank: 2, TargetModules: LoraSettings.AllProjections, InitSeed: 3, FreezeA: false));
        using var scope = torch.NewDisposeScope();
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 4));
        model.train();
        Tensor input = torch.tensor(s_ids).unsqueeze(0);
        Tensor labels = torch.tensor(s_ids[1..].Append(1L).ToArray()).unsqueeze(0);

        LlamaForCausalLM.Loss(model.forward(input), labels).backward();

        var grads = model.AdapterParameters().ToList();
        Assert.Equal(2 * model.Config.NumHiddenLayers * model.Config.ProjectionNames.Count, grads.Count);
        foreach (var (name, parameter) in grads)
        {
            Assert.True(parameter.grad is { } g && g.abs().sum().item<float>() > 0, $"{name} got no gradient");
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void SummedTokenLoss_ChunkedAndCheckpointed_EqualTheWholeLogitsLossAndGradients(string family)
    {
        using var model = new LlamaForCausalLM(TinyFamilies.Config(family));
        model.InitializeRandom(27, std: 0.2);
        model.AddLora(new LoraSettings(Rank: 2, TargetModules: LoraSettings.AllProjections, InitSeed: 3, FreezeA: false));
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 4));
        model.LossChunkTokens = 3;
        model.CheckpointActivations = false;

        // A padded batch through sliding windows, soft-capping and LongRoPE: the chunked head (soft-capped per chunk on
        // Gemma 2) and per-layer recomputation must give what the plain whole-logits pass gives.
        var whole = TrainingGradients.Compute(model, seed: 1, TrainingGradients.WholeLoss);
        var chunked = TrainingGradients.Compute(model, seed: 1);
        model.CheckpointActivations = true;
        var checkpointed = TrainingGradients.Compute(model, seed: 1);

        Assert.Equal(whole.Loss, chunked.Loss, 3);
        Assert.Equal(whole.Loss, checkpointed.Loss, 3);
        TrainingGradients.AssertEqual(whole.Grads, chunked.Grads, 1e-5);
        TrainingGradients.AssertEqual(whole.Grads, checkpointed.Grads, 1e-5);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void ParameterCount_EveryFamily_EqualsTheBuiltModel(string family)
    {
        var config = TinyFamilies.Config(family);
        using var model = new LlamaForCausalLM(config);

        Assert.Equal(model.BaseWeights().Sum(w => w.Tensor.numel()), ModelMemoryEstimate.ParameterCount(config));
        Assert.Equal(config.ProjectionNames, ModelMemoryEstimate.Projections(config).Select(p => p.Name));
    }

    [Fact]
    public void AddLora_Phi3_UsesPeftsFusedModuleNames()
    {
        using var model = new LlamaForCausalLM(TinyFamilies.Config("phi3"));
        model.InitializeRandom(1);

        model.AddLora(new LoraSettings(Rank: 4, TargetModules: LoraSettings.AllProjections));
        var adapter = model.GetAdapter();

        Assert.Equal(["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], model.Lora!.Targets);
        Assert.Equal([4L, 64L], adapter["base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"].Shape);
        Assert.Equal([128L, 4L], adapter["base_model.model.model.layers.0.self_attn.qkv_proj.lora_B.weight"].Shape);
        Assert.Equal([256L, 4L], adapter["base_model.model.model.layers.1.mlp.gate_up_proj.lora_B.weight"].Shape);
        Assert.Equal(16, adapter.Tensors.Count);
        Assert.DoesNotContain(adapter.Names, n => n.Contains("q_proj.", StringComparison.Ordinal) && !n.Contains("qkv_proj.", StringComparison.Ordinal));
    }

    [Fact]
    public void AddLora_Phi3NoTargets_TakesTheFusedAttentionProjections()
    {
        using var model = new LlamaForCausalLM(TinyFamilies.Config("phi3"));
        model.InitializeRandom(1);

        model.AddLora(new LoraSettings(Rank: 2));

        Assert.Equal(["qkv_proj", "o_proj"], model.Lora!.Targets);
    }

    [Fact]
    public void AddLora_TargetsTheFamilyLacks_IsClearError()
    {
        using var model = new LlamaForCausalLM(TinyFamilies.Config("phi3"));
        model.InitializeRandom(1);

        var e = Assert.Throws<ArgumentException>(() => model.AddLora(new LoraSettings(TargetModules: ["q_proj", "v_proj"])));

        Assert.Contains("q_proj, v_proj", e.Message);
        Assert.Contains("phi3", e.Message);
        Assert.Contains("qkv_proj, o_proj, gate_up_proj, down_proj", e.Message);
        Assert.Null(model.Lora);
    }

    [Theory]
    [InlineData("phi3")]
    [InlineData("gemma2")]
    [InlineData("qwen3")]
    public void PeftAdapter_SaveApply_NewFamilyRoundTripsWithPeftKeys(string family)
    {
        using var dir = new TempDirectory();
        WriteRandom(dir.Sub("model"), TinyFamilies.Config(family), seed: 25);
        using var trained = LlamaForCausalLM.FromPretrained(dir.Sub("model"));
        trained.AddLora(new LoraSettings(Rank: 4, Alpha: 8, TargetModules: LoraSettings.AllProjections, InitSeed: 7));
        using var scope = torch.NewDisposeScope();
        trained.SetAdapter(LoraTests.RandomB(trained.GetAdapter(), seed: 8));
        Tensor input = torch.tensor(s_ids).unsqueeze(0);
        Tensor expected = trained.forward(input);

        PeftAdapter.Save(dir.Sub("adapter"), trained, "tiny-" + family);
        using var fresh = LlamaForCausalLM.FromPretrained(dir.Sub("model"));
        PeftAdapter.Apply(dir.Sub("adapter"), fresh);

        var targets = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("adapter"), PeftAdapter.ConfigFileName)))!["target_modules"]!
            .AsArray().Select(t => t!.GetValue<string>()).ToArray();
        Assert.Equal(trained.Config.ProjectionNames, targets);
        using (var reader = new SafeTensorsReader(Path.Combine(dir.Sub("adapter"), PeftAdapter.WeightsFileName)))
        {
            string fused = family == "phi3" ? "self_attn.qkv_proj" : "self_attn.q_proj";
            Assert.Contains($"base_model.model.model.layers.1.{fused}.lora_A.weight", reader.Names);
        }
        Assert.True(fresh.forward(input).allclose(expected, rtol: 1e-5, atol: 1e-6));
    }

    [Theory]
    [InlineData("phi3")]
    [InlineData("gemma2")]
    public void MergeLora_FusedAndGemmaLayers_EqualsAdapterForward(string family)
    {
        using var model = new LlamaForCausalLM(TinyFamilies.Config(family));
        model.InitializeRandom(26, std: 0.2);
        model.AddLora(new LoraSettings(Rank: 4, Alpha: 8, TargetModules: LoraSettings.AllProjections, InitSeed: 9));
        using var scope = torch.NewDisposeScope();
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 10));
        Tensor input = torch.tensor(s_ids).unsqueeze(0);
        Tensor withAdapter = model.forward(input);

        model.MergeLora();

        Assert.True(model.forward(input).allclose(withAdapter, rtol: 1e-4, atol: 1e-5));
    }

    /// <summary>A random checkpoint with init std 0.2 and random norms, so every weight visibly moves the logits.</summary>
    internal static void WriteRandom(string directory, LlamaConfig config, long seed)
    {
        TinyLlamaFactory.Write(directory, config, seed, initStd: 0.2);
        torch.manual_seed(seed);
        LlamaForCausalLMTests.RewriteWeights(directory, (name, w) => name.EndsWith("norm.weight", StringComparison.Ordinal) || name.EndsWith(".bias", StringComparison.Ordinal)
            ? torch.rand_like(w) + 0.5
            : w);
    }
}
