using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Federated.EndToEnd.Tests;

/// <summary>`coordinator serve` as a real child process on a fixed loopback port, so a test can SIGKILL it and start it again on the same state file.</summary>
internal sealed class CoordinatorProcess : IDisposable
{
    private readonly Process _process;
    private readonly TaskCompletionSource _listening = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private CoordinatorProcess(Process process) => _process = process;

    public bool HasExited => _process.HasExited;

    /// <summary>A port that was free a moment ago (the coordinator binds it; a restart binds it again).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>Starts `coordinator serve` and waits for its "listening" log line.</summary>
    public static async Task<CoordinatorProcess> StartAsync(string pki, string state, int port, Action<string> log, TimeSpan timeout)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.Environment["OMP_NUM_THREADS"] = "1";
        start.Environment["FEDERATED_Coordinator__HeartbeatIntervalSeconds"] = "1";
        start.Environment["Logging__LogLevel__Microsoft.AspNetCore"] = "Warning";
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(BuildOutput("Coordinator", "coordinator.dll"));
        foreach (string arg in (string[])["serve", "--pki", pki, "--state", state, "--address", "127.0.0.1", "--port", port.ToString(CultureInfo.InvariantCulture)])
        {
            start.ArgumentList.Add(arg);
        }
        var process = new CoordinatorProcess(Process.Start(start) ?? throw new InvalidOperationException("could not start coordinator"));
        process._process.OutputDataReceived += (_, e) => process.OnLine(e.Data, log);
        process._process.ErrorDataReceived += (_, e) => process.OnLine(e.Data, log);
        process._process.BeginOutputReadLine();
        process._process.BeginErrorReadLine();
        using var wait = new CancellationTokenSource(timeout);
        Task exited = process._process.WaitForExitAsync(wait.Token);
        if (await Task.WhenAny(process._listening.Task, exited, Task.Delay(timeout)) != process._listening.Task)
        {
            process.Dispose();
            throw new TimeoutException($"the coordinator did not report listening on port {port} within {timeout}");
        }
        return process;
    }

    /// <summary>SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: false);
        _process.WaitForExit();
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
        _process.Dispose();
    }

    /// <summary>A built project output (src/NAME/bin/CONFIGURATION/TFM/FILE) next to this test's own build output.</summary>
    public static string BuildOutput(string project, string file)
    {
        var bin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string repository = bin.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        return Path.Combine(repository, "src", project, "bin", bin.Parent.Name, bin.Name, file);
    }

    private void OnLine(string? line, Action<string> log)
    {
        if (line is null)
        {
            return;
        }
        if (line.Contains("Coordinator listening on", StringComparison.Ordinal))
        {
            _listening.TrySetResult();
        }
        log(line);
    }
}
