using Federated.Training.Lora;
using Federated.Training.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class LoraTests
{
    private static readonly LoraSettings s_all = new(Rank: 4, Alpha: 8, TargetModules: LoraSettings.AllProjections, InitSeed: 99);

    [Fact]
    public void AddLora_BZero_EqualsBase()
    {
        using var dir = new TempDirectory();
        using var model = Load(dir, tied: false);
        using var scope = torch.NewDisposeScope();
        Tensor input = Input();
        Tensor before = model.forward(input);

        model.AddLora(s_all);
        Tensor after = model.forward(input);

        Assert.True(after.allclose(before, rtol: 0, atol: 0));
        Assert.Equal(2 * 7 * 2, model.GetAdapter().Tensors.Count);
    }

    [Fact]
    public void Forward_WithAdapter_EqualsMergedWeights()
    {
        using var dir = new TempDirectory();
        using var model = Load(dir, tied: true);
        using var scope = torch.NewDisposeScope();
        model.AddLora(s_all);
        model.SetAdapter(RandomB(model.GetAdapter(), seed: 5));
        Tensor input = Input();
        Tensor withAdapter = model.forward(input);
        Tensor baseOnly = WithLoraDisabled(model, input);

        model.MergeLora();
        Tensor merged = model.forward(input);

        Assert.Null(model.Lora);
        Assert.False(withAdapter.allclose(baseOnly, rtol: 0, atol: 1e-4));
        Assert.True(merged.allclose(withAdapter, rtol: 1e-4, atol: 1e-5), $"max diff {(merged - withAdapter).abs().max().item<float>()}");
    }

    [Fact]
    public void MergeLora_SavePretrained_ReloadsToSameLogits()
    {
        using var dir = new TempDirectory();
        using var model = Load(dir, tied: false);
        using var scope = torch.NewDisposeScope();
        model.AddLora(s_all);
        model.SetAdapter(RandomB(model.GetAdapter(), seed: 6));
        Tensor input = Input();
        Tensor withAdapter = model.forward(input);

        model.MergeLora();
        model.SavePretrained(dir.Sub("merged"));
        using var reloaded = LlamaForCausalLM.FromPretrained(dir.Sub("merged"));

        Assert.True(reloaded.forward(input).allclose(withAdapter, rtol: 1e-4, atol: 1e-5));
        Assert.DoesNotContain(reloaded.named_parameters(), p => p.name.Contains("lora"));
    }

    [Fact]
    public void AddLora_SameSeed_SameAOnEveryClient_DifferentSeedDifferentA()
    {
        using var dir = new TempDirectory();
        using var a = Load(dir, tied: false);
        using var b = LlamaForCausalLM.FromPretrained(dir.Path);
        using var c = LlamaForCausalLM.FromPretrained(dir.Path);
        a.AddLora(s_all);
        b.AddLora(s_all);
        c.AddLora(s_all with { InitSeed = 100 });

        const string name = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";
        float[] va = a.GetAdapter()[name].Data;

        Assert.Equal(va, b.GetAdapter()[name].Data);
        Assert.NotEqual(va, c.GetAdapter()[name].Data);
        // PEFT's kaiming_uniform_(a=sqrt(5)) bound is 1/sqrt(fan_in); down_proj's fan_in is the intermediate size 128.
        float bound = 1f / MathF.Sqrt(128);
        Assert.All(va, v => Assert.InRange(v, -bound, bound));
        Assert.True(va.Max() > bound * 0.8f && va.Min() < -bound * 0.8f);
    }

    [Fact]
    public void AddLora_Ffa_OnlyBTrains_OtherwiseBoth()
    {
        using var dir = new TempDirectory();
        using var ffa = Load(dir, tied: false);
        using var both = LlamaForCausalLM.FromPretrained(dir.Path);
        ffa.AddLora(new LoraSettings(Rank: 2, TargetModules: ["q_proj", "v_proj"]));
        both.AddLora(new LoraSettings(Rank: 2, TargetModules: ["q_proj", "v_proj"], FreezeA: false));

        Assert.All(ffa.TrainableAdapterNames(), n => Assert.EndsWith(".lora_B.weight", n));
        Assert.Equal(4, ffa.TrainableAdapterNames().Count);
        Assert.Equal(8, both.TrainableAdapterNames().Count);
        Assert.Equal(2 * 2 * (64 + 32), ffa.TrainableParameterCount());
        Assert.DoesNotContain(ffa.named_parameters(), p => p.parameter.requires_grad && !p.name.Contains("lora_B"));
    }

    [Fact]
    public void GetAdapter_PeftNamesAndShapes()
    {
        using var dir = new TempDirectory();
        using var model = Load(dir, tied: false);
        model.AddLora(s_all);

        var adapter = model.GetAdapter();

        Assert.Equal([4L, 64L], adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].Shape);
        Assert.Equal([32L, 4L], adapter["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].Shape);
        Assert.Equal([128L, 4L], adapter["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"].Shape);
        Assert.Equal(adapter.Names.Order(StringComparer.Ordinal), adapter.Names);
    }

    [Fact]
    public void SetAdapter_WrongShape_NamesTensor()
    {
        using var dir = new TempDirectory();
        using var model = Load(dir, tied: false);
        model.AddLora(s_all);
        var adapter = model.GetAdapter();
        const string name = "base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight";
        var bad = new AdapterTensors(adapter.Tensors.Select(t => t.Name == name ? new NamedTensor(name, [64, 3], new float[192]) : t));

        var e = Assert.Throws<InvalidDataException>(() => model.SetAdapter(bad));
        Assert.Contains(name, e.Message);
    }

    [Fact]
    public void FlattenUnflatten_RoundTrip_AndDeltaArithmetic()
    {
        var adapter = new AdapterTensors([
            new NamedTensor("b", [2], [3f, 4f]),
            new NamedTensor("a", [1, 2], [1f, 2f]),
        ]);

        float[] flat = adapter.Flatten();
        var back = adapter.Unflatten(flat);
        var delta = back.Add(adapter).Subtract(adapter);

        Assert.Equal([1f, 2f, 3f, 4f], flat);
        Assert.Equal(["a", "b"], back.Names);
        Assert.Equal(flat, delta.Flatten());
        Assert.Throws<ArgumentException>(() => adapter.Unflatten(new float[3]));
    }

    [Fact]
    public void Settings_InvalidTarget_Throws()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new LoraSettings(TargetModules: ["lm_head"]).Validate());
        Assert.Contains("lm_head", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new LoraSettings(Rank: 0).Validate());
    }

    internal static LlamaForCausalLM Load(TempDirectory dir, bool tied)
    {
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64, tieWordEmbeddings: tied), seed: 21);
        return LlamaForCausalLM.FromPretrained(dir.Path);
    }

    internal static AdapterTensors RandomB(AdapterTensors adapter, int seed)
    {
        var random = new Random(seed);
        return new AdapterTensors(adapter.Tensors.Select(t => t.Name.Contains("lora_B")
            ? new NamedTensor(t.Name, t.Shape, t.Data.Select(_ => (float)(random.NextDouble() - 0.5) * 0.2f).ToArray())
            : t));
    }

    private static Tensor Input() => torch.tensor(new long[] { 1, 5, 9, 13, 2, 6, 10, 14 }, [2, 4]);

    private static Tensor WithLoraDisabled(LlamaForCausalLM model, Tensor input)
    {
        model.SetLoraEnabled(false);
        try
        {
            return model.forward(input);
        }
        finally
        {
            model.SetLoraEnabled(true);
        }
    }
}
