using System.Globalization;
using System.Text.RegularExpressions;

namespace Federated.TestKit;

/// <summary>
/// `coordinator serve` as a real child process on loopback, for what only a process can show (SIGKILL, a restart on the
/// same state file, its own memory). It binds port 0 and reports the port it got in its "listening" line, so there is
/// no window between choosing a free port and binding it; a restart binds the port the first start reported.
/// </summary>
public sealed partial class CoordinatorProcess : IDisposable
{
    private readonly DotnetProcess _process;

    private CoordinatorProcess(DotnetProcess process, Uri address)
    {
        _process = process;
        Address = address;
    }

    /// <summary>The address it listens on, with the port it bound.</summary>
    public Uri Address { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// Starts `serve --pki PKI --state STATE` on 127.0.0.1 and waits for its "listening" line. <paramref name="port"/> 0
    /// lets it choose; <paramref name="heartbeatIntervalSeconds"/> is the interval it gives clients;
    /// <paramref name="arguments"/> go after the others (`--lease-seconds 3`).
    /// </summary>
    public static async Task<CoordinatorProcess> StartAsync(string pki, string state, TimeSpan timeout, int port = 0, int heartbeatIntervalSeconds = 1, Action<string>? onLine = null, string? coordinatorDll = null,
        IEnumerable<string>? arguments = null)
    {
        string dll = coordinatorDll ?? DotnetProcess.BuildOutput("Coordinator", "coordinator.dll");
        var environment = new Dictionary<string, string?>
        {
            ["FEDERATED_Coordinator__HeartbeatIntervalSeconds"] = heartbeatIntervalSeconds.ToString(CultureInfo.InvariantCulture),
            ["Logging__LogLevel__Microsoft.AspNetCore"] = "Warning",
        };
        DotnetProcess process = DotnetProcess.Start(dll,
            ["serve", "--pki", pki, "--state", state, "--address", "127.0.0.1", "--port", port.ToString(CultureInfo.InvariantCulture), .. arguments ?? []], onLine, environment);
        try
        {
            string listening = await process.WaitForLineAsync(line => ListeningPattern().IsMatch(line), timeout);
            return new CoordinatorProcess(process, new Uri(ListeningPattern().Match(listening).Groups[1].Value));
        }
        catch
        {
            process.Dispose();
            throw;
        }
    }

    /// <summary>SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.</summary>
    public void Kill() => _process.Kill();

    /// <summary>SIGSTOP: frozen with its connections open, as a long GC pause or a suspended VM leaves it.</summary>
    public Task PauseAsync() => _process.PauseAsync();

    /// <summary>SIGCONT after <see cref="PauseAsync"/>.</summary>
    public Task ContinueAsync() => _process.ContinueAsync();

    /// <summary>Waits for an output line <paramref name="match"/> accepts (see <see cref="DotnetProcess.WaitForLineAsync"/>).</summary>
    public Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout) => _process.WaitForLineAsync(match, timeout);

    /// <summary>SIGTERM, as a service manager stops it.</summary>
    public Task TerminateAsync() => _process.TerminateAsync();

    /// <summary>Waits for the process to exit and returns its exit code.</summary>
    public Task<int> WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync(timeout);

    /// <summary>Its last lines of output (stdout and stderr).</summary>
    public string Tail => _process.Tail;

    /// <summary>The process's working set now (0 once it has exited).</summary>
    public long WorkingSet() => _process.WorkingSet();

    /// <summary>The kernel's high-water mark of the resident set (Linux VmHWM); -1 where unavailable.</summary>
    public long PeakResidentBytes() => _process.PeakResidentBytes();

    public void Dispose() => _process.Dispose();

    [GeneratedRegex(@"listening on (https://\S+)")]
    private static partial Regex ListeningPattern();
}
