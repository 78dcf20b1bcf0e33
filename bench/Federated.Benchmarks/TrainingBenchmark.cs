using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Precision;
using Federated.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Benchmarks;

/// <summary>
/// Training step throughput on CPU: one optimiser step (forward, backward, AdamW) of a 6-layer, hidden-512, 8-head
/// Llama at sequence 256, batch 8, with LoRA r=8 on all projections and with full fine-tuning, all float32; on a CPU with
/// native bf16 matmul the LoRA step once more with bf16 weights and matmuls.
/// bench/pytorch_reference.py measures the same step in PyTorch for the ratio.
/// </summary>
internal sealed class TrainingBenchmark : IBenchmarkSuite
{
    public string Name => "training";

    public Task<int> RunAsync(BenchmarkOptions options)
    {
        int threads = options.GetInt("threads", 2);
        int layers = options.GetInt("layers", 6);
        int hidden = options.GetInt("hidden", 512);
        int heads = options.GetInt("heads", 8);
        int seq = options.GetInt("seq", options.Quick ? 64 : 256);
        int batch = options.GetInt("batch", options.Quick ? 2 : 8);
        int vocab = options.GetInt("vocab", 32000);
        int rank = options.GetInt("rank", 8);
        int repeats = options.Repeats;
        torch.set_num_threads(threads);
        torch.manual_seed(0);

        var config = new LlamaConfig
        {
            ModelType = "llama",
            VocabSize = vocab,
            HiddenSize = hidden,
            IntermediateSize = options.GetInt("intermediate", 1376),
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            NumKeyValueHeads = options.GetInt("kv-heads", heads),
            HeadDim = hidden / heads,
            RmsNormEps = 1e-5,
            RopeTheta = 10000,
            TieWordEmbeddings = false,
        };
        var random = new Random(1);
        long[] ids = Enumerable.Range(0, batch * seq).Select(_ => (long)random.Next(vocab)).ToArray();
        long[] labels = ids.Skip(1).Append(TokenizedExample.IgnoreIndex).ToArray();
        var data = new TokenBatch(ids, labels, Enumerable.Repeat(1L, ids.Length).ToArray(), batch, seq);

        var lora = new LoraSettings(rank, 2 * rank, 0, LoraSettings.AllProjections, 0, FreezeA: false);
        var (loraSeconds, loraCpu) = MeasureStep(config, data, lora, repeats, WeightStorage.Float32);
        var (ffaSeconds, ffaCpu) = MeasureStep(config, data, lora with { FreezeA = true }, repeats, WeightStorage.Float32);
        var (fullSeconds, fullCpu) = MeasureStep(config, data, lora: null, repeats, WeightStorage.Float32);
        bool bf16 = DeviceCapabilities.Detect(torch.CPU).NativeBf16Matmul;
        var (bf16Seconds, bf16Cpu) = bf16
            ? MeasureStep(config, data, lora, repeats, new WeightStorage(ScalarType.BFloat16, ScalarType.BFloat16, BaseQuantization.None))
            : (double.NaN, double.NaN);
        long tokens = (long)batch * seq;

        var result = new Dictionary<string, object>
        {
            ["suite"] = Name,
            ["device"] = "cpu",
            ["torch_threads"] = threads,
            ["layers"] = layers,
            ["hidden"] = hidden,
            ["heads"] = heads,
            ["vocab"] = vocab,
            ["seq"] = seq,
            ["batch"] = batch,
            ["lora_rank"] = rank,
            ["repeats"] = repeats,
            ["lora_step_seconds_median"] = Math.Round(loraSeconds, 4),
            ["lora_tokens_per_second"] = Math.Round(tokens / loraSeconds, 1),
            ["ffa_lora_step_seconds_median"] = Math.Round(ffaSeconds, 4),
            ["ffa_lora_tokens_per_second"] = Math.Round(tokens / ffaSeconds, 1),
            ["full_step_seconds_median"] = Math.Round(fullSeconds, 4),
            ["full_tokens_per_second"] = Math.Round(tokens / fullSeconds, 1),
            // Process CPU time per step: less sensitive than wall time when other jobs share the cores.
            ["lora_step_cpu_seconds_median"] = Math.Round(loraCpu, 4),
            ["ffa_lora_step_cpu_seconds_median"] = Math.Round(ffaCpu, 4),
            ["full_step_cpu_seconds_median"] = Math.Round(fullCpu, 4),
        };
        if (bf16)
        {
            // The LoRA step again with bf16 weights and matmuls (LoRA, norms, softmax and loss stay float32).
            result["bf16_lora_step_seconds_median"] = Math.Round(bf16Seconds, 4);
            result["bf16_lora_tokens_per_second"] = Math.Round(tokens / bf16Seconds, 1);
            result["bf16_lora_step_cpu_seconds_median"] = Math.Round(bf16Cpu, 4);
        }
        if (options.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            foreach (var (key, value) in result)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{key,-32} {value}"));
            }
        }
        return Task.FromResult(0);
    }

    private static (double Wall, double Cpu) MeasureStep(LlamaConfig config, TokenBatch data, LoraSettings? lora, int repeats,
        WeightStorage storage)
    {
        using var model = new LlamaForCausalLM(config, torch.CPU, storage);
        model.InitializeRandom(1);
        if (lora is not null)
        {
            model.AddLora(lora);
        }
        else
        {
            model.SetBaseTrainable(true);
        }
        var parameters = model.TrainableParameters().ToList();
        using var optimizer = torch.optim.AdamW(parameters, 1e-4);
        model.train();
        LoraTrainer.Step(model, optimizer, parameters, [data], 1.0); // warm-up: AdamW state, allocator
        var wall = new double[repeats];
        var cpu = new double[repeats];
        using var process = Process.GetCurrentProcess();
        for (int i = 0; i < repeats; i++)
        {
            process.Refresh();
            TimeSpan cpuStart = process.TotalProcessorTime;
            long start = Stopwatch.GetTimestamp();
            LoraTrainer.Step(model, optimizer, parameters, [data], 1.0);
            wall[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            process.Refresh();
            cpu[i] = (process.TotalProcessorTime - cpuStart).TotalSeconds;
        }
        return (Measure.Median(wall), Measure.Median(cpu));
    }
}
