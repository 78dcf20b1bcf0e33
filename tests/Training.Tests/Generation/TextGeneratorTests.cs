using Federated.Training.Generation;
using Federated.Training.Model;
using Federated.Training.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests.Generation;

[Collection(TorchCollection.Name)]
public sealed class TextGeneratorTests
{
    private static readonly int[] s_prompt = [3, 17, 42, 5];

    public static TheoryData<string> Families() => new(TinyFamilies.All);

    [Theory]
    [MemberData(nameof(Families))]
    public void Generate_Greedy_EqualsArgmaxOfFullForwardPasses(string family)
    {
        using var model = Tiny(family);

        // Twelve new tokens run past every tiny family's sliding window and Phi-3's original LongRoPE context.
        var result = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 12 });

        Assert.Equal(ArgmaxOfFullForwardPasses(model, 12), result.GeneratedIds);
        Assert.Equal(s_prompt, result.PromptIds);
        Assert.Equal(GenerationStop.MaxNewTokens, result.Stop);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void ForwardCached_TokenByToken_EqualsFullForwardOfEachPrefix(string family)
    {
        using var model = Tiny(family);
        long[] ids = [3, 17, 42, 5, 9, 61, 0, 23, 8, 14, 2, 33];
        using var scope = torch.NewDisposeScope();
        using var cache = model.NewCache(capacity: 2);

        // A three-token prefill, then one token at a time (the cache grows past its capacity on the way). Each step
        // must equal a full pass over the prefix it has seen: for LongRoPE a prefix within the original context
        // rotates with the short factors, a longer one with the long factors (and the cache is recomputed then).
        Tensor prefill = model.ForwardCached(torch.tensor(ids[..3]).unsqueeze(0), cache);
        Tensor expectedPrefill = model.forward(torch.tensor(ids[..3]).unsqueeze(0));
        Assert.True(prefill.allclose(expectedPrefill, rtol: 1e-4, atol: 1e-5));
        for (int i = 3; i < ids.Length; i++)
        {
            Tensor step = model.ForwardCached(torch.tensor(new[] { ids[i] }).unsqueeze(0), cache);
            Tensor full = model.forward(torch.tensor(ids[..(i + 1)]).unsqueeze(0));
            Assert.Equal([1L, 1L, 64L], step.shape);
            Assert.True(step[0, 0].allclose(full[0, -1], rtol: 1e-4, atol: 1e-5), $"position {i}: max diff {(step[0, 0] - full[0, -1]).abs().max().item<float>()}");
        }
        Assert.Equal(ids.Length, cache.Length);
    }

    [Theory]
    [InlineData("gemma2")]
    [InlineData("phi3-longrope")]
    [InlineData("qwen3")]
    public void Generate_Int8QuantizedBase_EqualsArgmaxOfItsFullForwardPasses(string family)
    {
        using var dir = new TempDirectory();
        TinyLlamaFactory.Write(dir.Path, TinyFamilies.Config(family), seed: 32, initStd: 0.3);
        using var model = LlamaForCausalLM.FromPretrained(dir.Path, null, ModelLoadOptions.Float32 with { Quantization = BaseQuantization.Int8 });

        var result = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 10 });

        Assert.Equal(BaseQuantization.Int8, model.Storage.Quantization);
        Assert.Equal(ArgmaxOfFullForwardPasses(model, 10), result.GeneratedIds);
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gemma2")]
    [InlineData("phi3-longrope")]
    public void Generate_SampledWithSeed_IsReproducibleAndEqualsUncachedSampling(string family)
    {
        using var model = Tiny(family);
        var options = new GenerationOptions { MaxNewTokens = 10, Temperature = 1.5, Seed = 77 };

        var first = TextGenerator.Generate(model, s_prompt, options);
        var second = TextGenerator.Generate(model, s_prompt, options);
        var uncached = TextGenerator.Generate(model, s_prompt, options, useCache: false);
        var otherSeed = TextGenerator.Generate(model, s_prompt, options with { Seed = 78 });
        var greedy = TextGenerator.Generate(model, s_prompt, options with { Temperature = 0 });

        Assert.Equal(first.GeneratedIds, second.GeneratedIds);
        Assert.Equal(first.GeneratedIds, uncached.GeneratedIds);
        Assert.NotEqual(first.GeneratedIds, otherSeed.GeneratedIds);
        Assert.NotEqual(first.GeneratedIds, greedy.GeneratedIds);
    }

    [Fact]
    public void Choose_Sampling_FollowsTheSoftmaxDistribution()
    {
        using var scope = torch.NewDisposeScope();
        Tensor logits = torch.tensor(new[] { 0f, (float)Math.Log(3), float.NegativeInfinity, 0f });
        using var sampler = new Generator(5);
        var counts = new int[4];

        for (int i = 0; i < 4000; i++)
        {
            counts[TextGenerator.Choose(logits, 1.0, sampler)]++;
        }

        // Probabilities 0.2, 0.6, 0, 0.2: within four standard deviations (about 0.025 of 4000 draws' share).
        Assert.Equal(0, counts[2]);
        Assert.InRange(counts[1] / 4000.0, 0.6 - 0.026, 0.6 + 0.026);
        Assert.InRange(counts[0] / 4000.0, 0.2 - 0.026, 0.2 + 0.026);
    }

    [Fact]
    public void Generate_StopId_EndsAndKeepsTheStopToken()
    {
        using var model = Tiny("llama");
        var free = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 6 });
        int stop = free.GeneratedIds[2];
        int firstStop = free.GeneratedIds.ToList().IndexOf(stop);

        var stopped = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 6, StopIds = [stop] });

        Assert.Equal(GenerationStop.EndOfSequence, stopped.Stop);
        Assert.Equal(free.GeneratedIds.Take(firstStop + 1), stopped.GeneratedIds);
    }

    [Fact]
    public void Generate_ReachesMaxPositionEmbeddings_StopsThere()
    {
        using var model = Tiny("phi3-longrope");

        var result = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 100 });

        Assert.Equal(GenerationStop.ContextLength, result.Stop);
        Assert.Equal(64 - s_prompt.Length, result.GeneratedIds.Count);
    }

    [Fact]
    public void Generate_TrainingModeModel_GeneratesInEvalModeAndRestoresIt()
    {
        using var model = Tiny("llama");
        model.AddLora(new Lora.LoraSettings(Rank: 2, Dropout: 0.5, FreezeA: false));
        model.SetAdapter(LoraTests.RandomB(model.GetAdapter(), seed: 3));
        model.train();

        var a = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 8 });
        var b = TextGenerator.Generate(model, s_prompt, new GenerationOptions { MaxNewTokens = 8 });

        Assert.Equal(a.GeneratedIds, b.GeneratedIds);
        Assert.True(model.training);
    }

    [Theory]
    [InlineData(new[] { 3, 64 }, 0.0, 4, "prompt token id 64")]
    [InlineData(new[] { 3, -1 }, 0.0, 4, "prompt token id -1")]
    [InlineData(new int[0], 0.0, 4, "no tokens")]
    [InlineData(new[] { 3 }, -0.5, 4, "temperature")]
    [InlineData(new[] { 3 }, double.NaN, 4, "temperature")]
    [InlineData(new[] { 3 }, 0.0, 0, "max new tokens")]
    public void Generate_BadInput_IsRefusedNamingIt(int[] prompt, double temperature, int maxNewTokens, string expected)
    {
        using var model = Tiny("llama");

        var e = Assert.ThrowsAny<ArgumentException>(() =>
            TextGenerator.Generate(model, prompt, new GenerationOptions { Temperature = temperature, MaxNewTokens = maxNewTokens }));

        Assert.Contains(expected, e.Message);
    }

    /// <summary>The reference: each token the argmax of a full, uncached forward pass over everything so far.</summary>
    private static List<int> ArgmaxOfFullForwardPasses(LlamaForCausalLM model, int steps)
    {
        var sequence = new List<int>(s_prompt);
        using (torch.no_grad())
        {
            for (int step = 0; step < steps; step++)
            {
                using var scope = torch.NewDisposeScope();
                Tensor logits = model.forward(torch.tensor(sequence.Select(i => (long)i).ToArray()).unsqueeze(0));
                sequence.Add((int)logits[0, -1].argmax().item<long>());
            }
        }
        return sequence[s_prompt.Length..];
    }

    private static LlamaForCausalLM Tiny(string family)
    {
        var model = new LlamaForCausalLM(TinyFamilies.Config(family));
        // A larger init spread than transformers' 0.02 makes the logits peaked, so argmax ties cannot flip on rounding.
        model.InitializeRandom(31, std: 0.3);
        return model;
    }
}
