using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Federated.TestKit;

/// <summary>
/// One of the solution's executables (`coordinator`, `edge-client`) as a real child process: `dotnet exec` of its own
/// build output (or a published executable run as itself), every output line handed to the caller as it arrives,
/// SIGKILL on demand and the whole tree killed on dispose, so a failed test never leaves a process behind.
/// </summary>
public sealed partial class DotnetProcess : IDisposable
{
    private const int TailLines = 40;

    private readonly Process _process;
    private readonly ConcurrentQueue<string> _tail = new();
    private readonly List<(Func<string, bool> Match, TaskCompletionSource<string> Seen)> _waits = [];
    private readonly Lock _lock = new();

    private DotnetProcess(Process process) => _process = process;

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>The last lines written (stdout and stderr together), for failure messages.</summary>
    public string Tail => string.Join('\n', _tail);

    /// <summary>
    /// Starts <paramref name="dll"/> (see <see cref="BuildOutput"/>; a path not ending in .dll, such as a published
    /// executable, runs as itself instead of under `dotnet exec`) with one intra-op thread for libtorch (its spinning
    /// OpenMP barriers make tiny models far slower on a shared machine) and <paramref name="environment"/> on top (a
    /// null value removes a variable).
    /// </summary>
    public static DotnetProcess Start(string dll, IEnumerable<string> arguments, Action<string>? onLine = null, IReadOnlyDictionary<string, string?>? environment = null)
    {
        var child = new DotnetProcess(Process.Start(StartInfo(dll, arguments, environment, workingDirectory: null)) ?? throw new InvalidOperationException($"could not start '{dll}'"));
        child._process.OutputDataReceived += (_, e) => child.OnLine(e.Data, onLine);
        child._process.ErrorDataReceived += (_, e) => child.OnLine(e.Data, onLine);
        child._process.BeginOutputReadLine();
        child._process.BeginErrorReadLine();
        return child;
    }

    /// <summary>Runs <paramref name="dll"/> to its exit and returns the exit code with everything it wrote.</summary>
    public static async Task<(int Code, string Stdout, string Stderr)> RunAsync(string dll, IEnumerable<string> arguments, TimeSpan timeout,
        IReadOnlyDictionary<string, string?>? environment = null, string? workingDirectory = null)
    {
        using Process process = Process.Start(StartInfo(dll, arguments, environment, workingDirectory)) ?? throw new InvalidOperationException($"could not start '{dll}'");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"'{Path.GetFileName(dll)} {string.Join(' ', arguments)}' did not finish within {timeout}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }

    /// <summary>
    /// A built executable of the solution, src/PROJECT/bin/CONFIGURATION/TFM/FILE, found from the calling test's or
    /// benchmark's own build output (same configuration and framework).
    /// </summary>
    public static string BuildOutput(string project, string file)
    {
        var bin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        for (DirectoryInfo? folder = bin; folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Federated.sln")))
            {
                return Path.Combine(folder.FullName, "src", project, "bin", bin.Parent!.Name, bin.Name, file);
            }
        }
        throw new DirectoryNotFoundException($"no Federated.sln above '{bin.FullName}'");
    }

    /// <summary>Waits for an output line that <paramref name="match"/> accepts (one among the last lines already written counts), or the process's exit.</summary>
    public async Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(match);
        var seen = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (_tail.FirstOrDefault(match) is { } earlier)
            {
                return earlier;
            }
            _waits.Add((match, seen));
        }
        Task exited = _process.WaitForExitAsync();
        Task first = await Task.WhenAny(seen.Task, exited, Task.Delay(timeout));
        if (first == seen.Task)
        {
            return await seen.Task;
        }
        string why = first == exited ? $"exited with {_process.ExitCode}" : $"wrote no such line within {timeout}";
        throw new TimeoutException($"the process {why}; last lines:\n{Tail}");
    }

    /// <summary>SIGINT, as Ctrl+C in a terminal sends it.</summary>
    public Task InterruptAsync()
    {
        Signal(SigInt, "INT", mustReach: false);
        return Task.CompletedTask;
    }

    /// <summary>SIGSTOP: the process is frozen (its sockets stay open, the kernel still answers for them) until <see cref="ContinueAsync"/>.</summary>
    public Task PauseAsync()
    {
        Pause();
        return Task.CompletedTask;
    }

    /// <summary>
    /// SIGSTOP sent at once from the calling thread: called from an output-line callback it freezes the process within
    /// the time its next line takes to arrive, not after a continuation is scheduled.
    /// </summary>
    public void Pause() => Signal(SigStop, "STOP", mustReach: true);

    /// <summary>SIGCONT: a paused process runs on, its timers all due at once.</summary>
    public Task ContinueAsync()
    {
        Signal(SigCont, "CONT", mustReach: true);
        return Task.CompletedTask;
    }

    /// <summary>SIGTERM, as systemd, docker stop or kill send it.</summary>
    public Task TerminateAsync()
    {
        Signal(SigTerm, "TERM", mustReach: false);
        return Task.CompletedTask;
    }

    // Signal numbers of Linux x86-64 and arm64 (signal(7)).
    private const int SigInt = 2, SigTerm = 15, SigCont = 18, SigStop = 19;

    // kill(2) from the calling thread, no helper process. Interrupt and terminate, as `kill` did for them, ignore a
    // process that has already gone; pause and continue must reach it.
    private void Signal(int number, string name, bool mustReach)
    {
        if (Kill(_process.Id, number) != 0 && mustReach)
        {
            throw new InvalidOperationException($"kill -{name} {_process.Id} failed with errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    /// <summary>Waits for the process to exit and returns its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var limit = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the process did not exit within {timeout}; last lines:\n{Tail}");
        }
        return _process.ExitCode;
    }

    /// <summary>SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.</summary>
    public void Kill()
    {
        _process.Kill(entireProcessTree: false);
        // With a timeout, WaitForExit does not wait for the output readers, so this may run from an output callback.
        _process.WaitForExit(TimeSpan.FromSeconds(30));
    }

    /// <summary>The process's working set now (0 once it has exited).</summary>
    public long WorkingSet()
    {
        if (_process.HasExited)
        {
            return 0;
        }
        _process.Refresh();
        return _process.WorkingSet64;
    }

    /// <summary>The kernel's high-water mark of the resident set (Linux VmHWM); -1 where unavailable.</summary>
    public long PeakResidentBytes()
    {
        string status = $"/proc/{_process.Id}/status";
        if (_process.HasExited || !File.Exists(status))
        {
            return -1;
        }
        return ProcStatus.Bytes(status, "VmHWM") ?? -1;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit(10_000);
        }
        _process.Dispose();
    }

    private static ProcessStartInfo StartInfo(string dll, IEnumerable<string> arguments, IReadOnlyDictionary<string, string?>? environment, string? workingDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(dll);
        ArgumentNullException.ThrowIfNull(arguments);
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"'{dll}' is not built; build the solution first", dll);
        }
        // A published folder's apphost (no .dll) runs as itself, as an operator or systemd starts it.
        bool published = !dll.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var start = new ProcessStartInfo(published ? dll : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory is not null)
        {
            start.WorkingDirectory = workingDirectory;
        }
        start.Environment["OMP_NUM_THREADS"] = "1";
        foreach ((string key, string? value) in environment ?? new Dictionary<string, string?>())
        {
            if (value is null)
            {
                start.Environment.Remove(key);
            }
            else
            {
                start.Environment[key] = value;
            }
        }
        if (!published)
        {
            start.ArgumentList.Add("exec");
            start.ArgumentList.Add(dll);
        }
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        return start;
    }

    private void OnLine(string? line, Action<string>? onLine)
    {
        if (line is null)
        {
            return;
        }
        lock (_lock)
        {
            _tail.Enqueue(line);
            while (_tail.Count > TailLines)
            {
                _tail.TryDequeue(out _);
            }
            foreach ((Func<string, bool> match, TaskCompletionSource<string> seen) in _waits.Where(w => w.Match(line)).ToList())
            {
                seen.TrySetResult(line);
                _waits.Remove((match, seen));
            }
        }
        onLine?.Invoke(line);
    }
}
