using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

[Collection(TorchCollection.Name)]
public sealed class QuantizationTests
{
    [Fact]
    public void Int8_RoundTrip_WithinHalfAStepPerRow()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(1);
        // Rows of very different scales, an outlier column and an all-zero row.
        Tensor w = torch.randn(37, 130) * torch.logspace(-3, 1, 37).unsqueeze(1);
        w[5, 7] = 40f;
        w[9] = torch.zeros(130);

        using var q = Int8Weight.Quantize(w);
        Tensor back = q.Dequantize(ScalarType.Float32);

        // LLM.int8() §2.1 absmax quantization rounds 127·w/absmax(row) to the nearest integer: error <= absmax(row)/254.
        Tensor bound = w.abs().amax([1L], keepdim: true) / 254 * (1 + 1e-6);
        Assert.True((w - back).abs().le(bound).all().item<bool>(), $"worst excess {((w - back).abs() - bound).max().item<float>()}");
        Assert.Equal(0f, back[9].abs().max().item<float>());
        Assert.Equal(127, q.Codes[5].abs().max().item<sbyte>());
        Assert.Equal(37L * 130 + 37 * 4, q.StorageBytes);
    }

    [Fact]
    public void Nf4_RoundTrip_WithinHalfTheLargestLevelGapPlusScaleError()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(2);
        // 70 x 100 = 7000 values: 110 blocks of 64 (the last one partial) and their absmax in one block of 256.
        Tensor w = torch.randn(70, 100) * 0.02;
        w[3, 3] = 0.5f;

        using var q = Nf4Weight.Quantize(w);
        Tensor back = q.Dequantize(ScalarType.Float32);

        // QLoRA §3: each value/absmax(block) goes to the nearest NF4 level, so its error is at most half the widest gap
        // between levels (0.3038/2, between -1 and -0.6962), times absmax; the double-quantized absmax Â adds |A - Â|.
        float halfGap = Nf4Weight.Levels.Zip(Nf4Weight.Levels.Skip(1), (a, b) => (b - a) / 2).Max();
        Tensor flat = torch.cat([w.reshape(-1), torch.zeros(7040 - 7000)]).view(-1, 64);
        Tensor absmax = flat.abs().amax([1L]);
        Tensor scales = q.Scales();
        Tensor bound = (halfGap * absmax + (absmax - scales).abs()).unsqueeze(1) * (1 + 1e-5);
        Tensor error = (torch.cat([(w - back).reshape(-1), torch.zeros(40)]).view(-1, 64)).abs();
        Assert.True(error.le(bound).all().item<bool>(), $"worst excess {(error - bound).max().item<float>()}");
        Assert.Equal(0.15190359950065613, halfGap, 6);
        // Even the optimal 16-level quantizer of a Gaussian leaves 9.7% rms error (Max 1960, MSE 0.009497 σ²); NF4 is near it.
        double rms = ((w - back).norm() / w.norm()).item<float>();
        Assert.InRange(rms, 0.05, 0.12);

        // bitsandbytes' blockwise 8-bit dynamic code: |A - Â| is at most half its widest gap times the scale block's absmax.
        float codeHalfGap = Nf4Weight.ScaleCode.Zip(Nf4Weight.ScaleCode.Skip(1), (a, b) => (b - a) / 2).Max();
        Tensor centred = absmax - absmax.mean();
        Assert.True((absmax - scales).abs().max().item<float>() <= codeHalfGap * centred.abs().max().item<float>() * (1 + 1e-5));
        Assert.Equal(256, Nf4Weight.ScaleCode.Count);
        Assert.Equal(0.0070312, codeHalfGap, 5);
    }

    [Fact]
    public void Nf4_ValuesOnTheLevels_RoundTripExactly()
    {
        using var scope = torch.NewDisposeScope();
        // Every block has absmax 0.5, so the centred scales are all 0 and the double quantization is exact too.
        float[] values = Enumerable.Range(0, 256).Select(i => Nf4Weight.Levels[(i * 7 + i / 16) % 16] * 0.5f).ToArray();
        for (int block = 0; block < 4; block++)
        {
            values[block * 64] = 0.5f;
        }
        Tensor w = torch.tensor(values).view(2, 128);

        using var q = Nf4Weight.Quantize(w);

        Assert.True(q.Dequantize(ScalarType.Float32).eq(w).all().item<bool>());
        Assert.Equal(256 / 2 + 4 + 4 + 4, q.StorageBytes);
    }

    [Theory]
    [InlineData(BaseQuantization.Int8, 0.03)]
    [InlineData(BaseQuantization.Nf4, 0.4)]
    public void FromPretrained_QuantizedBase_EqualsFloat32OfTheDequantizedWeightsAndLoraTrainsInFloat32(BaseQuantization quantization,
        double tolerance)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyLlamaFactory.DefaultConfig(vocabSize: 64), seed: 51, initStd: 0.1);
        using var exact = LlamaForCausalLM.FromPretrained(dir.Path);
        using var dequantized = LlamaForCausalLM.FromPretrained(dir.Path);
        using var quantized = LlamaForCausalLM.FromPretrained(dir.Path, null, ModelLoadOptions.Float32 with { Quantization = quantization });
        using var scope = torch.NewDisposeScope();
        using (torch.no_grad())
        {
            foreach (var (_, linear) in dequantized.AllLinears())
            {
                using FrozenWeight q = quantization == BaseQuantization.Int8 ? Int8Weight.Quantize(linear.Weight!) : Nf4Weight.Quantize(linear.Weight!);
                linear.Weight!.copy_(q.Dequantize(ScalarType.Float32));
            }
        }
        Tensor ids = torch.tensor(TrainingGradients.Ids);

        Tensor reference = exact.forward(ids);
        Tensor logits = quantized.forward(ids);

        // The quantized model is exactly a float32 model of its dequantized weights; those differ from the originals
        // by the quantization error (tiny random models amplify it more than trained ones).
        Assert.True(logits.allclose(dequantized.forward(ids), rtol: 1e-5, atol: 1e-6));
        double relative = ((logits - reference).norm() / reference.norm()).item<float>();
        Assert.InRange(relative, 1e-6, tolerance);
        Assert.All(quantized.AllLinears(), l => Assert.Null(l.Linear.Weight));
        Assert.Contains(quantized.BaseWeights(), w => w.Name == "lm_head.weight");
        quantized.AddLora(new LoraSettings(Rank: 4, TargetModules: LoraSettings.AllProjections, FreezeA: false));
        quantized.SetAdapter(LoraTests.RandomB(quantized.GetAdapter(), seed: 1));
        var (_, grads) = TrainingGradients.Compute(quantized, seed: 3);
        Assert.Equal(quantized.AdapterParameters().Count(), grads.Count);
        Assert.All(quantized.AdapterParameters(), p => Assert.Equal(ScalarType.Float32, p.Parameter.dtype));
        Assert.All(grads.Values, g => Assert.Contains(g, v => v != 0));
        Assert.Throws<InvalidOperationException>(() => quantized.MergeLora());
    }
}
