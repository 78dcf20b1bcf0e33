using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;
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
/// bench/pytorch_reference.py measures the same step in PyTorch for the ratio. The DP-SGD step (per-example clipping of
/// the LoRA gradients, Gaussian noise from the OS generator) runs on the same batch as a fixed sample of the expected size,
/// so its time and its memory compare with the non-private step's as ratios. The LoRA, FFA-LoRA and their DP-SGD steps each
/// run in a fresh process (this suite with --child-variant), so no variant's peak carries what an earlier one left.
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
        if (options.Values.TryGetValue("child-variant", out string? only))
        {
            var (childLora, childPrivate) = Variant(only, lora);
            var (wall, cpuSeconds, memory) = MeasureStep(config, data, childLora, repeats, WeightStorage.Float32, childPrivate);
            Console.WriteLine(JsonSerializer.Serialize(new { wall, cpu = cpuSeconds, extra = memory.Extra, peak = memory.Peak }));
            return Task.FromResult(0);
        }
        // Each of these four in its own process: measured one after another in one process, a variant's peak resident
        // set includes what the allocator kept from the variants before it (the later DP steps then read 1.44x and 1.62x
        // the earlier non-private ones on a machine where fresh processes give the figures this reports).
        var (loraSeconds, loraCpu, loraPeak) = MeasureInChild("lora", options);
        var (ffaSeconds, ffaCpu, ffaPeak) = MeasureInChild("ffa-lora", options);
        var (dpSeconds, dpCpu, dpPeak) = MeasureInChild("dp-lora", options);
        var (dpFfaSeconds, dpFfaCpu, dpFfaPeak) = MeasureInChild("dp-ffa-lora", options);
        var (fullSeconds, fullCpu, _) = MeasureStep(config, data, lora: null, repeats, WeightStorage.Float32);
        bool bf16 = DeviceCapabilities.Detect(torch.CPU).NativeBf16Matmul;
        var (bf16Seconds, bf16Cpu, _) = bf16
            ? MeasureStep(config, data, lora, repeats, new WeightStorage(ScalarType.BFloat16, ScalarType.BFloat16, BaseQuantization.None))
            : (double.NaN, double.NaN, (0L, 0L));
        long tokens = (long)batch * seq;

        var result = new Dictionary<string, object>
        {
            ["suite"] = Name,
            ["device"] = "cpu",
            ["cpu"] = TrainingMemoryBenchmark.CpuModel(),
            ["cpu_flags"] = string.Join(' ', TrainingMemoryBenchmark.CpuFlags()),
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
            // DP-SGD (per-example clipping, noise) against the non-private step of the same LoRA, A and B trained and B only.
            ["dp_lora_step_seconds_median"] = Math.Round(dpSeconds, 4),
            ["dp_lora_step_cpu_seconds_median"] = Math.Round(dpCpu, 4),
            ["dp_ffa_lora_step_seconds_median"] = Math.Round(dpFfaSeconds, 4),
            ["dp_ffa_lora_step_cpu_seconds_median"] = Math.Round(dpFfaCpu, 4),
            ["dp_over_lora_time_ratio"] = Math.Round(dpSeconds / loraSeconds, 3),
            ["dp_over_lora_cpu_time_ratio"] = Math.Round(dpCpu / loraCpu, 3),
            ["dp_over_ffa_lora_time_ratio"] = Math.Round(dpFfaSeconds / ffaSeconds, 3),
            // Peak resident bytes during the measured steps (VmHWM reset after the warm-up step, in the variant's own
            // process), and that peak above the resident set just before the steps.
            ["lora_step_peak_rss_bytes"] = loraPeak.Peak,
            ["dp_lora_step_peak_rss_bytes"] = dpPeak.Peak,
            ["ffa_lora_step_peak_rss_bytes"] = ffaPeak.Peak,
            ["dp_ffa_lora_step_peak_rss_bytes"] = dpFfaPeak.Peak,
            ["lora_step_peak_extra_bytes"] = loraPeak.Extra,
            ["dp_lora_step_peak_extra_bytes"] = dpPeak.Extra,
            ["ffa_lora_step_peak_extra_bytes"] = ffaPeak.Extra,
            ["dp_ffa_lora_step_peak_extra_bytes"] = dpFfaPeak.Extra,
            ["dp_over_lora_step_memory_ratio"] = Math.Round((double)dpPeak.Extra / loraPeak.Extra, 3),
            ["dp_over_ffa_lora_step_memory_ratio"] = Math.Round((double)dpFfaPeak.Extra / ffaPeak.Extra, 3),
            ["dp_over_lora_peak_rss_ratio"] = Math.Round((double)dpPeak.Peak / loraPeak.Peak, 3),
            ["dp_over_ffa_lora_peak_rss_ratio"] = Math.Round((double)dpFfaPeak.Peak / ffaPeak.Peak, 3),
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

    private static (double Wall, double Cpu, (long Extra, long Peak) Memory) MeasureStep(LlamaConfig config, TokenBatch data,
        LoraSettings? lora, int repeats, WeightStorage storage, bool privateStep = false)
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
        using PerExampleCapture? capture = privateStep ? PerExampleCapture.Attach(model) : null;
        var parameters = capture?.Parameters.ToList() ?? model.TrainableParameters().ToList();
        using var optimizer = torch.optim.AdamW(parameters, 1e-4);
        var records = Records(data);
        var privacy = new DpSgdOptions { ExpectedBatchSize = data.BatchSize, NoiseMultiplier = 1.0, MaxGradNorm = 1.0, Delta = 1e-5 };
        var random = new NoiseSampler(privacy.Randomness);
        Action step = capture is null
            ? () => LoraTrainer.Step(model, optimizer, parameters, [data], 1.0)
            // The sample is fixed at the expected batch so both steps do the same forward and backward work.
            : () => LoraTrainer.PrivateStep(model, optimizer, capture, records, 0, privacy, random);
        model.train();
        step(); // warm-up: AdamW state, allocator
        var wall = new double[repeats];
        var cpu = new double[repeats];
        using var process = Process.GetCurrentProcess();
        long before = ProcStatus("VmRSS");
        ResetPeak();
        for (int i = 0; i < repeats; i++)
        {
            process.Refresh();
            TimeSpan cpuStart = process.TotalProcessorTime;
            long start = Stopwatch.GetTimestamp();
            step();
            wall[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
            process.Refresh();
            cpu[i] = (process.TotalProcessorTime - cpuStart).TotalSeconds;
        }
        long peak = ProcStatus("VmHWM");
        return (Measure.Median(wall), Measure.Median(cpu), (Math.Max(0, peak - before), peak));
    }

    private static (LoraSettings Lora, bool Private) Variant(string name, LoraSettings lora) => name switch
    {
        "lora" => (lora, false),
        "ffa-lora" => (lora with { FreezeA = true }, false),
        "dp-lora" => (lora, true),
        "dp-ffa-lora" => (lora with { FreezeA = true }, true),
        _ => throw new ArgumentException($"unknown training variant '{name}': use lora, ffa-lora, dp-lora or dp-ffa-lora"),
    };

    /// <summary>Runs this suite with --child-variant in a fresh process (same flags) and reads its one JSON line.</summary>
    private static (double Wall, double Cpu, (long Extra, long Peak) Memory) MeasureInChild(string variant, BenchmarkOptions options)
    {
        var arguments = new List<string> { "training" };
        foreach (var (key, value) in options.Values.Where(v => v.Key != "child-variant"))
        {
            arguments.AddRange(["--" + key, value]);
        }
        arguments.AddRange(["--repeats", options.Repeats.ToString(CultureInfo.InvariantCulture)]);
        if (options.Quick)
        {
            arguments.Add("--quick");
        }
        arguments.AddRange(["--child-variant", variant]);
        var (code, line, error) = BenchChild.Run(arguments);
        if (code != 0 || !line.StartsWith('{'))
        {
            throw new InvalidOperationException($"the {variant} child exited {code}: {error}");
        }
        using JsonDocument json = JsonDocument.Parse(line);
        JsonElement root = json.RootElement;
        return (root.GetProperty("wall").GetDouble(), root.GetProperty("cpu").GetDouble(),
            (root.GetProperty("extra").GetInt64(), root.GetProperty("peak").GetInt64()));
    }

    private static TokenizedExample[] Records(TokenBatch data) =>
        Enumerable.Range(0, data.BatchSize).Select(row =>
        {
            int offset = row * data.SequenceLength;
            int[] ids = data.InputIds.AsSpan(offset, data.SequenceLength).ToArray().Select(v => (int)v).ToArray();
            int[] labels = data.Labels.AsSpan(offset, data.SequenceLength).ToArray().Select(v => (int)v).ToArray();
            return new TokenizedExample(ids, labels);
        }).ToArray();

    // Linux: writing 5 to clear_refs resets VmHWM to the current resident set (proc(5)), so each variant's peak is its own.
    private static void ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (IOException)
        {
            // Without the reset the peak is the process's so far; the ratios then understate the larger step's growth.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static long ProcStatus(string field)
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
            {
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }
        return 0;
    }
}
