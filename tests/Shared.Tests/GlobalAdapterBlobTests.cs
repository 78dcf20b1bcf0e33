using Federated.Training.Lora;
using Federated.Training.Peft;
using Federated.Training.SafeTensors;
using Federated.Wire;

namespace Federated.Shared.Tests;

/// <summary>The blob goes through TorchSharp (tensors are written by the safetensors writer), so these share one collection.</summary>
[Collection(TorchCollection.Name)]
public sealed class GlobalAdapterBlobTests
{
    private const string A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    private const string B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

    private static readonly LoraSettings s_settings = new(Rank: 2, Alpha: 4, Dropout: 0, TargetModules: ["q_proj"], InitSeed: 7, FreezeA: true);

    [Fact]
    public void Write_ThenRead_SameSettingsTensorsAndBaseModel()
    {
        AdapterTensors tensors = Tensors();

        GlobalAdapterContent read = GlobalAdapterBlob.Read(GlobalAdapterBlob.Write(s_settings, tensors, "tiny-llama"));

        Assert.Equal((2, 4.0, 7L, true), (read.Settings.Rank, read.Settings.Alpha, read.Settings.InitSeed, read.Settings.FreezeA));
        Assert.Equal(["q_proj"], read.Settings.Targets);
        Assert.Equal("tiny-llama", read.BaseModel);
        Assert.Equal(tensors.Flatten(), read.Tensors.Flatten());
    }

    [Fact]
    public void Write_Blob_IsAPeftSafetensorsFileCarryingItsConfig()
    {
        byte[] blob = GlobalAdapterBlob.Write(s_settings, Tensors(), "tiny-llama");

        using var reader = new SafeTensorsReader(blob, PeftAdapter.WeightsFileName);

        Assert.Equal(PeftAdapter.ConfigJson(s_settings, "tiny-llama"), GlobalAdapterBlob.Config(reader));
        Assert.Equal("pt", reader.Metadata["format"]);
        Assert.Equal([A, B], reader.Names.Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Read_PlainPeftWeightsWithoutTheConfig_RefusedNamingTheKey()
    {
        byte[] weights = PeftAdapter.ToBytes(s_settings, Tensors(), "tiny-llama").Weights;

        var ex = Assert.Throws<InvalidDataException>(() => GlobalAdapterBlob.Read(weights));

        Assert.Contains($"'{GlobalAdapterBlob.ConfigMetadataKey}'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_ConfigOverTheLimit_Refused()
    {
        byte[] blob = PeftAdapter.ToBytes(s_settings, Tensors(), "tiny-llama",
            metadata: new Dictionary<string, string> { [GlobalAdapterBlob.ConfigMetadataKey] = new string(' ', GlobalAdapterBlob.MaxConfigCharacters + 1) }).Weights;

        Assert.Throws<InvalidDataException>(() => GlobalAdapterBlob.Read(blob));
    }

    [Fact]
    public void Read_NotSafetensors_InvalidData()
    {
        Assert.Throws<InvalidDataException>(() => GlobalAdapterBlob.Read(new byte[] { 1, 2, 3 }));
    }

    private static AdapterTensors Tensors() => new([
        new NamedTensor(A, [2, 3], [0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f]),
        new NamedTensor(B, [4, 2], [1, -1, 2, -2, 3, -3, 4, -4]),
    ]);
}
