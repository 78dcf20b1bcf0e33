using System.Diagnostics;

namespace Federated.EdgeClient.Tests.Cli;

/// <summary>Runs the built edge-client in a child process, so exit codes and stdout/stderr are the real ones.</summary>
internal static class EdgeClientProcess
{
    public sealed record Result(int ExitCode, string StdOut, string StdErr);

    public static async Task<(int Code, string Stdout, string Stderr)> RunAsync(params string[] args)
    {
        Result result = await Task.Run(() => Run(args));
        return (result.ExitCode, result.StdOut, result.StdErr);
    }

    public static Result Run(params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "edge-client.dll");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // One intra-op thread: on the shared CI machine libtorch's spinning OpenMP barriers make tiny models far slower.
        start.Environment["OMP_NUM_THREADS"] = "1";
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(dll);
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using Process process = Process.Start(start) ?? throw new InvalidOperationException("could not start edge-client");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"edge-client {string.Join(' ', args)} did not finish in 3 minutes");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
