using System.Text.Json.Nodes;
using Federated.Training.Lora;
using Federated.Training.Peft;
using Federated.Training.SafeTensors;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class PeftAdapterTests
{
    private static readonly LoraSettings s_settings = new(Rank: 4, Alpha: 16, Dropout: 0.05,
        TargetModules: ["q_proj", "v_proj", "down_proj"], InitSeed: 1234567890123, FreezeA: true);

    [Fact]
    public void SaveLoad_F32_Lossless()
    {
        using var dir = new TempDirectory();
        var adapter = TrainedAdapter(dir);

        PeftAdapter.Save(dir.Sub("out"), s_settings, adapter, "tiny-llama");
        var (settings, loaded, baseModel) = PeftAdapter.Load(dir.Sub("out"));

        Assert.Equal("tiny-llama", baseModel);
        Assert.Equal(s_settings.Rank, settings.Rank);
        Assert.Equal(s_settings.Alpha, settings.Alpha);
        Assert.Equal(s_settings.Dropout, settings.Dropout);
        Assert.Equal(s_settings.Targets, settings.Targets);
        Assert.Equal(s_settings.InitSeed, settings.InitSeed);
        Assert.True(settings.FreezeA);
        Assert.Equal(adapter.Names, loaded.Names);
        Assert.Equal(adapter.Flatten(), loaded.Flatten());
    }

    [Fact]
    public void ToBytes_FromBytesAndFromStream_EqualTheFolderRoundTrip()
    {
        using var dir = new TempDirectory();
        var adapter = TrainedAdapter(dir);
        PeftAdapter.Save(dir.Sub("out"), s_settings, adapter, "tiny-llama");

        var (config, weights) = PeftAdapter.ToBytes(s_settings, adapter, "tiny-llama");
        var fromBytes = PeftAdapter.FromBytes(config, weights);
        var fromStream = PeftAdapter.FromStream(config, new MemoryStream(weights));

        Assert.Equal(File.ReadAllText(Path.Combine(dir.Sub("out"), PeftAdapter.ConfigFileName)), config);
        Assert.Equal(File.ReadAllBytes(Path.Combine(dir.Sub("out"), PeftAdapter.WeightsFileName)), weights);
        Assert.Equal(s_settings, fromBytes.Settings with { TargetModules = s_settings.TargetModules });
        Assert.Equal(s_settings.Targets, fromStream.Settings.Targets);
        Assert.Equal(adapter.Flatten(), fromBytes.Adapter.Flatten());
        Assert.Equal(adapter.Flatten(), fromStream.Adapter.Flatten());
        Assert.Equal("tiny-llama", fromStream.BaseModelNameOrPath);
    }

    [Theory]
    [InlineData(SafeTensorDType.BF16)]
    [InlineData(SafeTensorDType.F16)]
    public void SaveLoad_HalfTypes_LosslessForRepresentableValues(SafeTensorDType dtype)
    {
        using var dir = new TempDirectory();
        var adapter = TrainedAdapter(dir);
        // Round once through the stored type; a second trip must then be exact.
        PeftAdapter.Save(dir.Sub("first"), s_settings, adapter, "m", dtype);
        var once = PeftAdapter.Load(dir.Sub("first")).Adapter;

        PeftAdapter.Save(dir.Sub("second"), s_settings, once, "m", dtype);
        var twice = PeftAdapter.Load(dir.Sub("second")).Adapter;

        Assert.Equal(once.Flatten(), twice.Flatten());
        float maxError = adapter.Flatten().Zip(once.Flatten(), (a, b) => MathF.Abs(a - b)).Max();
        Assert.True(maxError < 2e-3f, $"{dtype} rounding error {maxError}");
    }

    [Fact]
    public void Save_ConfigAndKeys_FollowPeft()
    {
        using var dir = new TempDirectory();
        var adapter = TrainedAdapter(dir);

        PeftAdapter.Save(dir.Sub("out"), s_settings, adapter, "base/model");

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Sub("out"), "adapter_config.json")))!.AsObject();
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", config["task_type"]!.GetValue<string>());
        Assert.Equal(4, config["r"]!.GetValue<int>());
        Assert.Equal(16.0, config["lora_alpha"]!.GetValue<double>());
        Assert.Equal("none", config["bias"]!.GetValue<string>());
        Assert.False(config["fan_in_fan_out"]!.GetValue<bool>());
        Assert.Equal("base/model", config["base_model_name_or_path"]!.GetValue<string>());
        Assert.Equal(["q_proj", "v_proj", "down_proj"], config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
        using var reader = new SafeTensorsReader(Path.Combine(dir.Sub("out"), "adapter_model.safetensors"));
        Assert.Equal([4L, 64L], reader.Info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").Shape);
        Assert.Equal([64L, 4L], reader.Info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").Shape);
        Assert.Equal(2 * 3 * 2, reader.Names.Count);
    }

    [Fact]
    public void SaveModel_ThenApply_ReproducesLogits()
    {
        using var dir = new TempDirectory();
        using var trained = LoraTests.Load(dir, tied: true);
        trained.AddLora(s_settings);
        trained.SetAdapter(LoraTests.RandomB(trained.GetAdapter(), seed: 4));
        PeftAdapter.Save(dir.Sub("adapter"), trained, dir.Path);
        using var fresh = Federated.Training.Model.LlamaForCausalLM.FromPretrained(dir.Path);

        var settings = PeftAdapter.Apply(dir.Sub("adapter"), fresh);

        using var scope = TorchSharp.torch.NewDisposeScope();
        var input = TorchSharp.torch.tensor(new long[] { 4, 8, 15, 16, 23, 42 }).unsqueeze(0);
        Assert.Equal(s_settings.InitSeed, settings.InitSeed);
        Assert.True(fresh.forward(input).allclose(trained.forward(input), rtol: 0, atol: 0));
    }

    [Fact]
    public void Load_KeyOutsideTargets_IsError()
    {
        using var dir = new TempDirectory();
        var adapter = TrainedAdapter(dir);
        PeftAdapter.Save(dir.Sub("out"), s_settings, adapter, "m");
        string configPath = Path.Combine(dir.Sub("out"), "adapter_config.json");
        File.WriteAllText(configPath, File.ReadAllText(configPath).Replace("\"down_proj\"", "\"up_proj\""));

        var e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Load(dir.Sub("out")));
        Assert.Contains("down_proj", e.Message);
    }

    [Fact]
    public void Load_MissingFolderFiles_IsError()
    {
        using var dir = new TempDirectory();

        Assert.Throws<FileNotFoundException>(() => PeftAdapter.Load(dir.Path));
    }

    private static AdapterTensors TrainedAdapter(TempDirectory dir)
    {
        using var model = LoraTests.Load(dir, tied: false);
        model.AddLora(s_settings);
        return LoraTests.RandomB(model.GetAdapter(), seed: 8);
    }
}
