namespace Federated.Benchmarks;

/// <summary>Benchmark entry point: `Federated.Benchmarks SUITE [--json] [suite options]`.</summary>
internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var suites = typeof(Program).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && typeof(IBenchmarkSuite).IsAssignableFrom(t))
            .Select(t => (IBenchmarkSuite)Activator.CreateInstance(t)!)
            .ToDictionary(s => s.Name, StringComparer.Ordinal);
        if (args.Length == 0 || !suites.TryGetValue(args[0], out IBenchmarkSuite? suite))
        {
            Console.Error.WriteLine($"usage: Federated.Benchmarks <{string.Join('|', suites.Keys.Order())}> [--json] [options]");
            return 2;
        }
        var options = BenchmarkOptions.Parse(args.AsSpan(1));
        return await suite.RunAsync(options);
    }
}

/// <summary>One named group of measurements; implementations are discovered by reflection.</summary>
internal interface IBenchmarkSuite
{
    string Name { get; }

    Task<int> RunAsync(BenchmarkOptions options);
}

/// <summary>Flags common to all suites: --json, --repeats N, --quick, plus free-form --key value pairs.</summary>
internal sealed record BenchmarkOptions(bool Json, int Repeats, bool Quick, IReadOnlyDictionary<string, string> Values)
{
    public static BenchmarkOptions Parse(ReadOnlySpan<string> args)
    {
        bool json = false, quick = false;
        int repeats = 5;
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--json": json = true; break;
                case "--quick": quick = true; break;
                case "--repeats" when i + 1 < args.Length: repeats = int.Parse(args[++i]); break;
                default:
                    if (args[i].StartsWith("--", StringComparison.Ordinal) && i + 1 < args.Length)
                    {
                        values[args[i][2..]] = args[++i];
                    }
                    break;
            }
        }
        return new BenchmarkOptions(json, repeats, quick, values);
    }

    public int GetInt(string key, int fallback) => Values.TryGetValue(key, out var v) ? int.Parse(v) : fallback;
}

/// <summary>Timing helpers: medians over repeated runs, since shared machines are noisy.</summary>
internal static class Measure
{
    public static double MedianSeconds(int repeats, Action action, int warmups = 1)
    {
        for (int i = 0; i < warmups; i++)
        {
            action();
        }
        var times = new double[repeats];
        for (int i = 0; i < repeats; i++)
        {
            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            action();
            times[i] = System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        return Median(times);
    }

    public static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToArray();
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }
}
