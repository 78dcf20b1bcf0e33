namespace Federated.EdgeClient.Tests.Cli;

/// <summary>Runs the built edge-client (copied beside these tests) in a child process, so exit codes and stdout/stderr are the real ones.</summary>
internal static class EdgeClientProcess
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromMinutes(3);

    public sealed record Result(int ExitCode, string StdOut, string StdErr);

    public static Task<(int Code, string Stdout, string Stderr)> RunAsync(params string[] args) =>
        DotnetProcess.RunAsync(Path.Combine(AppContext.BaseDirectory, "edge-client.dll"), args, s_timeout);

    public static Result Run(params string[] args)
    {
        (int code, string stdout, string stderr) = Task.Run(() => RunAsync(args)).GetAwaiter().GetResult();
        return new Result(code, stdout, stderr);
    }
}
