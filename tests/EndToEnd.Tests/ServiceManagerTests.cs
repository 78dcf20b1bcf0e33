using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Federated.TestKit;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The processes as systemd runs them: `Type=notify` (READY=1 once serving, STOPPING=1 on SIGTERM, through a real
/// NOTIFY_SOCKET datagram socket) and the unit files in docs/deploy checked by `systemd-analyze verify` against the
/// executables this build made.
/// </summary>
public sealed class ServiceManagerTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-systemd-" + Guid.NewGuid().ToString("N")[..12]);

    [Fact]
    public async Task Serve_WithNotifySocket_ReadyOnceListeningThenStoppingOnSigterm()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), ["alice"]);
        using NotifySocket notify = NotifySocket.Create(Path.Combine(_root, "notify.sock"));
        using DotnetProcess serve = DotnetProcess.Start(DotnetProcess.BuildOutput("Coordinator", "coordinator.dll"),
            ["serve", "--pki", federation.Directory, "--state", Path.Combine(_root, "state.db"), "--port", "0"], Log,
            new Dictionary<string, string?> { ["NOTIFY_SOCKET"] = notify.Path });

        string status = await notify.ReceiveAsync(m => m.StartsWith("STATUS=listening on", StringComparison.Ordinal), TimeSpan.FromSeconds(90));
        Assert.StartsWith("STATUS=listening on https://127.0.0.1:", status, StringComparison.Ordinal);
        await notify.ReceiveAsync(m => m == "READY=1", TimeSpan.FromSeconds(30));
        await serve.TerminateAsync();
        await notify.ReceiveAsync(m => m == "STOPPING=1", TimeSpan.FromSeconds(30));
        Assert.Equal(0, await serve.WaitForExitAsync(TimeSpan.FromSeconds(60)));
    }

    [Theory]
    [InlineData("federated-coordinator.service")]
    [InlineData("federated-edge-client.service")]
    public async Task UnitFile_SystemdAnalyzeVerify_NoFindings(string unit)
    {
        string text = File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "deploy", unit))
            .Replace("/opt/federated/coordinator/coordinator", DotnetProcess.BuildOutput("Coordinator", "coordinator"), StringComparison.Ordinal)
            .Replace("/opt/federated/edge-client/edge-client", DotnetProcess.BuildOutput("EdgeClient", "edge-client"), StringComparison.Ordinal);
        Directory.CreateDirectory(_root);
        string path = Path.Combine(_root, unit);
        File.WriteAllText(path, text);

        using var verify = Process.Start(new ProcessStartInfo("systemd-analyze", ["verify", path])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        }) ?? throw new InvalidOperationException("systemd-analyze did not start");
        string findings = await verify.StandardError.ReadToEndAsync() + await verify.StandardOutput.ReadToEndAsync();
        await verify.WaitForExitAsync();
        Log(findings);

        Assert.Equal(0, verify.ExitCode);
        // verify exits 0 on lines it ignores (an unknown setting, a bad value): those count as findings too.
        Assert.Equal("", findings.Trim());
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }

    private static string RepositoryRoot()
    {
        string? directory = AppContext.BaseDirectory;
        while (directory is not null && !File.Exists(Path.Combine(directory, "Federated.sln")))
        {
            directory = Path.GetDirectoryName(directory);
        }
        return directory ?? throw new InvalidOperationException("Federated.sln not found above the test output");
    }

    private void Log(string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // The test already ended.
        }
    }
}

/// <summary>
/// A service manager's end of sd_notify(3): a Unix datagram socket drained continuously, as systemd does (a process's
/// send blocks once the socket's short queue is full, so a reader that waits would stall the process under test).
/// </summary>
internal sealed class NotifySocket : IDisposable
{
    private readonly Socket _socket;
    private readonly System.Threading.Channels.Channel<string> _messages = System.Threading.Channels.Channel.CreateUnbounded<string>();
    private readonly Task _drain;

    private NotifySocket(Socket socket, string path)
    {
        _socket = socket;
        Path = path;
        _drain = Task.Run(DrainAsync);
    }

    public string Path { get; }

    public static NotifySocket Create(string path)
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path));
        return new NotifySocket(socket, path);
    }

    /// <summary>The first message <paramref name="match"/> accepts; earlier ones are skipped.</summary>
    public async Task<string> ReceiveAsync(Func<string, bool> match, TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        var seen = new List<string>();
        try
        {
            while (true)
            {
                string message = await _messages.Reader.ReadAsync(cancel.Token);
                if (match(message))
                {
                    return message;
                }
                seen.Add(message);
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no matching notification within {timeout}; got: {string.Join(" | ", seen)}");
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        try
        {
            _drain.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
            // The receive ends with the socket.
        }
        File.Delete(Path);
    }

    private async Task DrainAsync()
    {
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                int length = await _socket.ReceiveAsync(buffer, SocketFlags.None);
                _messages.Writer.TryWrite(Encoding.UTF8.GetString(buffer, 0, length));
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            _messages.Writer.TryComplete();
        }
    }
}
