using System.Diagnostics;
using System.Text.Json.Nodes;
using Federated.TestKit;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Precision;
using Federated.Training.Trainer;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Benchmarks;

/// <summary>One variant of the training-memory suite in its own process: load, then LoRA steps, reporting VmHWM after each phase.</summary>
internal static class TrainingMemoryChild
{
    public static int Run(string modelDirectory, BenchmarkOptions options)
    {
        string shape = options.Values["shape"];
        string variant = options.Values["variant"];
        int batch = options.GetInt("batch", 2);
        int seq = options.GetInt("seq", 256);
        int steps = Math.Max(1, options.GetInt("steps", 2));
        torch.set_num_threads(options.GetInt("threads", Environment.ProcessorCount));
        Device device = TrainingDevice.Resolve(options.Values.GetValueOrDefault("device", "cpu"));
        var (precision, quantization, checkpoint) = ParseVariant(variant);
        var lora = new LoraSettings(Rank: 8, Alpha: 16, TargetModules: LoraSettings.AllProjections);
        var loadOptions = new ModelLoadOptions
        {
            Precision = precision,
            Quantization = quantization,
            CheckpointActivations = checkpoint,
            Workload = new TrainingWorkload(batch, seq, lora),
        };
        var result = new JsonObject
        {
            ["shape"] = shape,
            ["variant"] = variant,
            ["device"] = device.type.ToString().ToLowerInvariant(),
            ["torch_threads"] = torch.get_num_threads(),
            ["batch"] = batch,
            ["seq"] = seq,
            ["rss_before_load_bytes"] = Status("VmRSS"),
        };
        var clock = Stopwatch.StartNew();
        LlamaForCausalLM model;
        try
        {
            model = LlamaForCausalLM.FromPretrained(modelDirectory, device, loadOptions);
        }
        catch (Exception e) when (e is UnsupportedPrecisionException or ModelMemoryException)
        {
            // The product's own refusal is the result for this variant (fp16 without fp16 units, a model too large).
            result["refused"] = e.Message;
            Console.WriteLine(result.ToJsonString());
            return 0;
        }
        using (model)
        {
            result["load_seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 2);
            result["peak_rss_load_bytes"] = Status("VmHWM");
            result["rss_after_load_bytes"] = Status("VmRSS");
            result["parameters"] = ModelMemoryEstimate.ParameterCount(model.Config);
            result["weight_bytes"] = model.WeightBytes();
            result["weight_type"] = model.Storage.WeightType.ToString();
            result["compute_type"] = model.Storage.ComputeType.ToString();
            result["quantize"] = PrecisionChoices.Name(model.Storage.Quantization);
            result["checkpoint_activations"] = model.CheckpointActivations;
            result["estimate_bytes"] = ModelMemoryEstimate.Estimate(model.Config, model.Storage, loadOptions.Workload, model.CheckpointActivations).TotalBytes;
            bool reset = ResetPeak();
            model.AddLora(lora);
            var parameters = model.TrainableParameters().ToList();
            using var optimizer = torch.optim.AdamW(parameters, 2e-4);
            model.train();
            TokenBatch data = RandomBatch(model.Config.VocabSize, batch, seq);
            var seconds = new List<double>();
            var cpuSeconds = new List<double>();
            var losses = new List<double>();
            using var process = Process.GetCurrentProcess();
            for (int step = 0; step < steps; step++)
            {
                process.Refresh();
                TimeSpan cpuStart = process.TotalProcessorTime;
                var stepClock = Stopwatch.StartNew();
                var (loss, _, _) = LoraTrainer.Step(model, optimizer, parameters, [data], 1.0);
                seconds.Add(stepClock.Elapsed.TotalSeconds);
                process.Refresh();
                cpuSeconds.Add((process.TotalProcessorTime - cpuStart).TotalSeconds);
                losses.Add(loss);
            }
            // The first step also sizes the allocator and AdamW state; later steps are the steady rate.
            double steady = seconds.Count > 1 ? Measure.Median(seconds.Skip(1).ToList()) : seconds[0];
            double steadyCpu = cpuSeconds.Count > 1 ? Measure.Median(cpuSeconds.Skip(1).ToList()) : cpuSeconds[0];
            result["peak_rss_train_bytes"] = Status("VmHWM");
            result["peak_rss_train_is_process_peak"] = !reset;
            result["step_seconds"] = new JsonArray(seconds.Select(s => (JsonNode)Math.Round(s, 3)).ToArray());
            result["step_cpu_seconds"] = new JsonArray(cpuSeconds.Select(s => (JsonNode)Math.Round(s, 3)).ToArray());
            result["tokens_per_second"] = Math.Round(batch * seq / steady, 1);
            // Tokens per CPU-second of the whole process: fairer than wall time when other jobs share the cores.
            result["tokens_per_cpu_second"] = Math.Round(batch * seq / steadyCpu, 1);
            result["load_average"] = LoadAverage();
            result["loss_first_step"] = Math.Round(losses[0], 5);
        }
        Console.WriteLine(result.ToJsonString());
        return 0;
    }

    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "";

    internal static (ModelPrecision, BaseQuantization, bool?) ParseVariant(string variant)
    {
        var match = TrainingMemoryBenchmark.VariantPattern().Match(variant);
        ModelPrecision precision = PrecisionChoices.ParsePrecision(match.Groups[1].Value);
        BaseQuantization quantization = match.Groups[3].Success ? PrecisionChoices.ParseQuantization(match.Groups[3].Value) : BaseQuantization.None;
        bool? checkpoint = match.Groups[5].Success ? match.Groups[5].Value == "ckpt" : null;
        return (precision, quantization, checkpoint);
    }

    private static TokenBatch RandomBatch(int vocabulary, int batch, int seq)
    {
        var random = new Random(7);
        long[] ids = Enumerable.Range(0, batch * seq).Select(_ => (long)random.Next(vocabulary)).ToArray();
        long[] labels = new long[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            labels[i] = (i + 1) % seq == 0 ? TokenizedExample.IgnoreIndex : ids[i + 1];
        }
        return new TokenBatch(ids, labels, Enumerable.Repeat(1L, ids.Length).ToArray(), batch, seq);
    }

    /// <summary>A /proc/self/status field in bytes (VmRSS: now; VmHWM: the peak since start or the last reset).</summary>
    private static long Status(string field) =>
        ProcStatus.Bytes("/proc/self/status", field) ?? throw new InvalidOperationException($"/proc/self/status has no {field} line");

    /// <summary>Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+), so training gets its own peak.</summary>
    private static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
