using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Federated.Benchmarks;

/// <summary>
/// `training-memory`: peak resident memory while loading and while training, tokens per second and loss of one
/// LoRA r=8 step (all seven projections, as `edge-client train` adapts by default) for random bf16 models of real
/// shapes, written by the bench into a temporary folder and deleted afterwards. Each variant runs in its own child
/// process, so VmHWM (the kernel's peak resident set, which never goes down) is that variant's alone.
/// Options: --shapes qwen2.5-0.5b,llama-3.2-1b[,llama-3.1-8b] --variants auto,fp32,bf16,fp16,auto-int8,auto-nf4
/// (a variant is a precision, optionally -int8 or -nf4, optionally +ckpt or +nockpt) --batch 2 (1 for the 8B
/// shape) --seq 256 --steps 2 --threads (all cores) --device cpu|cuda|auto.
/// </summary>
internal sealed partial class TrainingMemoryBenchmark : IBenchmarkSuite
{
    private static readonly string[] s_defaultShapes = ["qwen2.5-0.5b", "llama-3.2-1b"];
    private static readonly string[] s_defaultVariants = ["auto", "fp32", "bf16", "fp16", "auto-int8", "auto-nf4"];

    public string Name => "training-memory";

    public Task<int> RunAsync(BenchmarkOptions options)
    {
        if (options.Values.TryGetValue("child-model", out string? modelDirectory))
        {
            return Task.FromResult(TrainingMemoryChild.Run(modelDirectory, options));
        }
        string[] shapes = List(options, "shapes", s_defaultShapes);
        string[] variants = List(options, "variants", s_defaultVariants);
        foreach (string shape in shapes.Where(s => !RandomCheckpoint.Shapes.ContainsKey(s)))
        {
            Console.Error.WriteLine($"--shapes: unknown shape '{shape}'; known: {string.Join(", ", RandomCheckpoint.Shapes.Keys)}");
            return Task.FromResult(2);
        }
        foreach (string variant in variants.Where(v => !VariantPattern().IsMatch(v)))
        {
            Console.Error.WriteLine($"--variants: '{variant}' is not precision[-int8|-nf4][+ckpt|+nockpt] with precision auto, fp32, bf16 or fp16");
            return Task.FromResult(2);
        }
        var results = new JsonArray();
        foreach (string shape in shapes)
        {
            string directory = Path.Combine(Path.GetTempPath(), $"federated-bench-memory-{shape}-{Guid.NewGuid():N}");
            try
            {
                var clock = Stopwatch.StartNew();
                RandomCheckpoint.Write(directory, RandomCheckpoint.Shapes[shape], seed: 1);
                Console.Error.WriteLine($"{shape}: wrote a random bf16 checkpoint in {clock.Elapsed.TotalSeconds:F0} s");
                foreach (string variant in variants)
                {
                    JsonNode result = RunChild(directory, shape, variant, options);
                    Console.Error.WriteLine($"{shape} {variant}: {result.ToJsonString()}");
                    results.Add(result);
                }
            }
            finally
            {
                // Never leave a multi-gigabyte model behind, whatever happened.
                if (Directory.Exists(directory))
                {
                    Directory.Delete(directory, recursive: true);
                }
            }
        }
        var report = new JsonObject
        {
            ["suite"] = Name,
            ["cpu"] = CpuModel(),
            ["cpu_flags"] = string.Join(' ', CpuFlags()),
            ["results"] = results,
        };
        if (options.Json)
        {
            Console.WriteLine(report.ToJsonString());
        }
        else
        {
            Console.WriteLine(report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        return Task.FromResult(0);
    }

    [GeneratedRegex("^(auto|fp32|bf16|fp16)(-(int8|nf4))?(\\+(ckpt|nockpt))?$")]
    internal static partial Regex VariantPattern();

    private static JsonNode RunChild(string directory, string shape, string variant, BenchmarkOptions options)
    {
        int batch = options.GetInt("batch", shape == "llama-3.1-8b" ? 1 : 2);
        var (exitCode, lastLine, error) = BenchChild.Run(["training-memory", "--child-model", directory, "--shape", shape, "--variant", variant,
            "--batch", batch.ToString(CultureInfo.InvariantCulture),
            "--seq", options.GetInt("seq", 256).ToString(CultureInfo.InvariantCulture),
            "--steps", options.GetInt("steps", 2).ToString(CultureInfo.InvariantCulture),
            "--threads", options.GetInt("threads", Environment.ProcessorCount).ToString(CultureInfo.InvariantCulture),
            "--device", options.Values.GetValueOrDefault("device", "cpu")]);
        try
        {
            return JsonNode.Parse(lastLine) ?? throw new JsonException("empty");
        }
        catch (JsonException)
        {
            return new JsonObject
            {
                ["shape"] = shape,
                ["variant"] = variant,
                ["error"] = $"child exited {exitCode}: {error.Split('\n').FirstOrDefault()}",
            };
        }
    }

    private static string[] List(BenchmarkOptions options, string key, string[] fallback) =>
        options.Values.TryGetValue(key, out string? value)
            ? value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            : fallback;

    internal static IEnumerable<string> CpuFlags()
    {
        string? flags = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))
            : null;
        return (flags ?? "").Split(' ').Where(f => f.StartsWith("avx512", StringComparison.Ordinal) || f.StartsWith("amx", StringComparison.Ordinal)).Order();
    }

    internal static string CpuModel() =>
        File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? ""
            : "";
}
