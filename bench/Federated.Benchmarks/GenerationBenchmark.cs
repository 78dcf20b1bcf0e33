using System.Globalization;
using System.Text.Json;
using Federated.Training.Generation;
using Federated.Training.Model;
using TorchSharp;

namespace Federated.Benchmarks;

/// <summary>
/// Greedy generation throughput on CPU with the key/value cache against recomputing the whole sequence per token,
/// on a random model of the chosen family (default a 6-layer, hidden-512, 8-head Llama), prompt 64, 64 new tokens.
/// </summary>
internal sealed class GenerationBenchmark : IBenchmarkSuite
{
    public string Name => "generation";

    public Task<int> RunAsync(BenchmarkOptions options)
    {
        int threads = options.GetInt("threads", 2);
        int prompt = options.GetInt("prompt", options.Quick ? 16 : 64);
        int newTokens = options.GetInt("new-tokens", options.Quick ? 16 : 64);
        string family = options.Values.TryGetValue("family", out string? f) ? f : "llama";
        int hidden = options.GetInt("hidden", 512);
        int heads = options.GetInt("heads", 8);
        torch.set_num_threads(threads);

        var config = new LlamaConfig
        {
            ModelType = family,
            VocabSize = options.GetInt("vocab", 32000),
            HiddenSize = hidden,
            IntermediateSize = options.GetInt("intermediate", 1376),
            NumHiddenLayers = options.GetInt("layers", 6),
            NumAttentionHeads = heads,
            NumKeyValueHeads = options.GetInt("kv-heads", heads),
            HeadDim = hidden / heads,
            RmsNormEps = 1e-5,
            HiddenActivation = family == "gemma2" ? "gelu_pytorch_tanh" : "silu",
            QueryPreAttnScalar = family == "gemma2" ? hidden / heads : null,
            AttnLogitSoftcapping = family == "gemma2" ? 50.0 : null,
            FinalLogitSoftcapping = family == "gemma2" ? 30.0 : null,
            MaxPositionEmbeddings = 4096,
        };
        using var model = new LlamaForCausalLM(config, torch.CPU);
        model.InitializeRandom(1);
        var random = new Random(2);
        int[] ids = Enumerable.Range(0, prompt).Select(_ => random.Next(config.VocabSize)).ToArray();
        var generation = new GenerationOptions { MaxNewTokens = newTokens };

        double cached = Measure.MedianSeconds(options.Repeats, () => TextGenerator.Generate(model, ids, generation));
        double uncached = Measure.MedianSeconds(Math.Max(1, options.Repeats / 2), () => TextGenerator.Generate(model, ids, generation, useCache: false));

        var result = new Dictionary<string, object>
        {
            ["suite"] = Name,
            ["device"] = "cpu",
            ["torch_threads"] = threads,
            ["family"] = family,
            ["layers"] = config.NumHiddenLayers,
            ["hidden"] = hidden,
            ["heads"] = heads,
            ["vocab"] = config.VocabSize,
            ["prompt_tokens"] = prompt,
            ["new_tokens"] = newTokens,
            ["repeats"] = options.Repeats,
            ["cached_seconds_median"] = Math.Round(cached, 4),
            ["cached_tokens_per_second"] = Math.Round(newTokens / cached, 1),
            ["uncached_seconds_median"] = Math.Round(uncached, 4),
            ["uncached_tokens_per_second"] = Math.Round(newTokens / uncached, 1),
            ["cache_speedup"] = Math.Round(uncached / cached, 2),
        };
        if (options.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            foreach (var (key, value) in result)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{key,-28} {value}"));
            }
        }
        return Task.FromResult(0);
    }
}
