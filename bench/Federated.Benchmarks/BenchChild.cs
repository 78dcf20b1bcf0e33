using System.Diagnostics;

namespace Federated.Benchmarks;

/// <summary>This benchmark executable run again as a child process, for measurements that need a fresh process.</summary>
internal static class BenchChild
{
    /// <summary>Runs the bench with <paramref name="arguments"/> and returns its exit code, its last stdout line and its stderr.</summary>
    public static (int Code, string LastLine, string Error) Run(IEnumerable<string> arguments)
    {
        string host = Environment.ProcessPath ?? "dotnet";
        var start = new ProcessStartInfo(host) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (Path.GetFileNameWithoutExtension(host) == "dotnet")
        {
            start.ArgumentList.Add(typeof(BenchChild).Assembly.Location);
        }
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        // Spinning OpenMP barriers would distort timings on a shared machine (README, training section).
        start.Environment.TryAdd("OMP_WAIT_POLICY", "PASSIVE");
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start '{host}'");
        Task<string> error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        string lastLine = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";
        return (process.ExitCode, lastLine, error.Result.Trim());
    }
}
