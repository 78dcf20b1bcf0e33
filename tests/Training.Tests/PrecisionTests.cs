using System.Runtime.InteropServices;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Precision;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class PrecisionTests
{
    private static readonly DeviceCapabilities s_bf16 = new(true, false, "test CPU with bf16");
    private static readonly DeviceCapabilities s_plain = new(false, false, "test CPU without bf16");

    [Fact]
    public void Detect_Cpu_AgreesWithProcCpuinfo()
    {
        if (!File.Exists("/proc/cpuinfo") || RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            return;
        }
        string[] flags = File.ReadLines("/proc/cpuinfo").First(l => l.StartsWith("flags", StringComparison.Ordinal)).Split(' ');

        DeviceCapabilities detected = DeviceCapabilities.Detect(torch.CPU);

        Assert.Equal(flags.Contains("avx512_bf16") || flags.Contains("amx_bf16"), detected.NativeBf16Matmul);
        Assert.Equal(flags.Contains("avx512_fp16") || flags.Contains("amx_fp16"), detected.NativeFp16Matmul);
    }

    [Fact]
    public void ComputeType_AutoAndExplicit_FollowTheDevice()
    {
        Assert.Equal(ScalarType.BFloat16, PrecisionChoices.ComputeType(ModelPrecision.Auto, s_bf16));
        Assert.Equal(ScalarType.Float32, PrecisionChoices.ComputeType(ModelPrecision.Auto, s_plain));
        Assert.Equal(ScalarType.Float32, PrecisionChoices.ComputeType(ModelPrecision.Fp32, s_bf16));
        var bf16 = Assert.Throws<UnsupportedPrecisionException>(() => PrecisionChoices.ComputeType(ModelPrecision.Bf16, s_plain));
        var fp16 = Assert.Throws<UnsupportedPrecisionException>(() => PrecisionChoices.ComputeType(ModelPrecision.Fp16, s_bf16));
        Assert.Equal("precision", bf16.Option);
        Assert.Contains("test CPU without bf16", bf16.Message);
        Assert.Contains("fp16", fp16.Message);
        Assert.DoesNotContain('\n', bf16.Message);
    }

    [Fact]
    public void CheckQuantization_DeviceWithoutSupport_NamesTheSetting()
    {
        var e = Assert.Throws<UnsupportedPrecisionException>(() =>
            PrecisionChoices.CheckQuantization(BaseQuantization.Nf4, new Device(DeviceType.MPS, 0)));

        Assert.Equal("quantize", e.Option);
        Assert.Contains("nf4", e.Message);
        PrecisionChoices.CheckQuantization(BaseQuantization.Nf4, torch.CPU);
    }

    [Theory]
    [InlineData(SafeTensorDType.BF16, ScalarType.BFloat16)]
    [InlineData(SafeTensorDType.F16, ScalarType.Float16)]
    [InlineData(SafeTensorDType.F32, ScalarType.BFloat16)]
    public void FromPretrained_Bf16Compute_KeepsHalfWeightsAndLoraFloat32WithLossNearFp32(SafeTensorDType stored, ScalarType expected)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 61, stored, initStd: 0.1);
        var options = new ModelLoadOptions { Precision = ModelPrecision.Bf16, Capabilities = s_bf16 };
        using var fp32 = LlamaForCausalLM.FromPretrained(dir.Path);
        using var bf16 = LlamaForCausalLM.FromPretrained(dir.Path, null, options);
        var lora = new LoraSettings(Rank: 4, TargetModules: LoraSettings.AllProjections, InitSeed: 1, FreezeA: false);
        fp32.AddLora(lora);
        bf16.AddLora(lora);

        var exact = TrainingGradients.Compute(fp32, seed: 2);
        var mixed = TrainingGradients.Compute(bf16, seed: 2);

        Assert.Equal(ScalarType.BFloat16, bf16.Storage.ComputeType);
        Assert.All(bf16.BaseWeights().Where(w => !w.Name.Contains("norm", StringComparison.Ordinal)), w => Assert.Equal(expected, w.Tensor.dtype));
        Assert.All(bf16.AdapterParameters(), p => Assert.Equal(ScalarType.Float32, p.Parameter.dtype));
        Assert.All(bf16.AdapterParameters(), p => Assert.Equal(ScalarType.Float32, p.Parameter.grad!.dtype));
        Assert.InRange(Math.Abs(mixed.Loss - exact.Loss) / exact.Loss, 0, 0.01);
        Assert.All(bf16.GetAdapter().Tensors, t => Assert.Equal(fp32.GetAdapter()[t.Name].Data, t.Data));
    }

    [Fact]
    public void FromPretrained_DtypeOtherThanConfig_NamesTensorAndFile()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 62, SafeTensorDType.F32);
        string config = Path.Combine(dir.Path, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"float32\"", "\"bfloat16\""));

        var e = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(dir.Path));

        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("is F32 but config.json torch_dtype is bfloat16", e.Message);
    }

    [Fact]
    public void FromPretrained_TensorBeyondTheConfiguredLayers_NamesIt()
    {
        using var dir = new TempDirectory();
        var config = TinyLlamaFactory.DefaultConfig(vocabSize: 64);
        TinyLlamaFactory.Write(dir.Path, config with { NumHiddenLayers = 3 }, seed: 63);
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), (config with { DeclaresTorchDtype = true }).ToJson());

        var e = Assert.Throws<InvalidDataException>(() => LlamaForCausalLM.FromPretrained(dir.Path));

        Assert.Contains("model.layers.2.", e.Message);
        Assert.Contains("2-layer", e.Message);
    }

    [Fact]
    public void FromPretrained_BeyondTheMemoryLimit_GivesEstimateAndFlagsThatFit()
    {
        using var dir = new TempDirectory();
        var config = TinyLlamaFactory.DefaultConfig(vocabSize: 64) with { HiddenSize = 256, IntermediateSize = 1024, NumAttentionHeads = 4, NumKeyValueHeads = 4, HeadDim = 64, NumHiddenLayers = 4 };
        TinyLlamaFactory.Write(dir.Path, config, seed: 64);
        var workload = new TrainingWorkload(4, 512, new LoraSettings(TargetModules: LoraSettings.AllProjections));
        var storage = WeightStorage.Float32;
        long plain = ModelMemoryEstimate.Estimate(config, storage, workload, checkpoint: false).TotalBytes;
        long checkpointed = ModelMemoryEstimate.Estimate(config, storage, workload, checkpoint: true).TotalBytes;
        var options = ModelLoadOptions.Float32 with { Workload = workload, MemoryLimitBytes = (plain + checkpointed) / 2, CheckpointActivations = false };

        var e = Assert.Throws<ModelMemoryException>(() => LlamaForCausalLM.FromPretrained(dir.Path, null, options));

        Assert.True(checkpointed < plain);
        Assert.Equal(plain, e.Estimate.TotalBytes);
        Assert.Contains("--checkpoint-activations (estimated", e.Message);
        Assert.Contains("batch 4 x 512", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        using var fits = LlamaForCausalLM.FromPretrained(dir.Path, null, options with { CheckpointActivations = true });
        Assert.True(fits.CheckpointActivations);
    }

    [Fact]
    public void SetBaseTrainable_HalfStorage_IsRefused()
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 65, SafeTensorDType.BF16);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path);

        var e = Assert.Throws<InvalidOperationException>(() => model.SetBaseTrainable(true));
        Assert.Contains("BFloat16", e.Message);
    }
}
