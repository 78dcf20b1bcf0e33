using System.Globalization;
using Federated.TestKit;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `coordinator serve` as an operator meets it: a second coordinator on a port in use stops with one line and leaves no
/// state file behind, and SIGTERM (a service manager's stop) is a clean stop with one line and exit 0.
/// </summary>
public sealed class ServeProcessTests(Xunit.Abstractions.ITestOutputHelper output) : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-serve-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Serve_PortInUseThenSigterm_OneLineNoStrayStateThenACleanStop()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), ["alice"]);
        using CoordinatorProcess first = await CoordinatorProcess.StartAsync(federation.Directory, Path.Combine(_root, "first.db"), TimeSpan.FromSeconds(90), onLine: Log);
        string second = Path.Combine(_root, "second", "state.db");

        (int code, string stdout, string stderr) = await DotnetProcess.RunAsync(DotnetProcess.BuildOutput("Coordinator", "coordinator.dll"),
            ["serve", "--pki", federation.Directory, "--state", second, "--address", "127.0.0.1", "--port", first.Address.Port.ToString(CultureInfo.InvariantCulture)],
            TimeSpan.FromSeconds(90), new Dictionary<string, string?> { ["Logging__LogLevel__Microsoft.AspNetCore"] = "Warning" });
        Log(stdout + stderr);

        Assert.Equal(1, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains($"port {first.Address.Port}", line, StringComparison.Ordinal);
        Assert.Contains("in use", line, StringComparison.Ordinal);
        Assert.DoesNotContain(" at ", stdout, StringComparison.Ordinal);
        Assert.False(File.Exists(second), "the refused start left a state file");

        await first.TerminateAsync();

        Assert.Equal(0, await first.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("coordinator: stopped (SIGTERM)", first.Tail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_MetricsPortInUse_OneLineNamingTheFlagAndNoStateFile()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), ["alice"]);
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        int port = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
        string state = Path.Combine(_root, "metrics", "state.db");

        (int code, string stdout, string stderr) = await DotnetProcess.RunAsync(DotnetProcess.BuildOutput("Coordinator", "coordinator.dll"),
            ["serve", "--pki", federation.Directory, "--state", state, "--port", "0", "--metrics-port", port.ToString(CultureInfo.InvariantCulture)],
            TimeSpan.FromSeconds(90));
        Log(stdout + stderr);

        Assert.Equal(1, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains($"metrics port {port} on 127.0.0.1 is in use", line, StringComparison.Ordinal);
        Assert.Contains("--metrics-port", line, StringComparison.Ordinal);
        Assert.False(File.Exists(state), "the refused start left a state file");
    }

    [Fact]
    public async Task Serve_Json_ListeningAndStoppingObjectsOnStdoutLogsOnStderr()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki-json"), ["alice"]);
        var stdout = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using DotnetProcess serve = DotnetProcess.Start(DotnetProcess.BuildOutput("Coordinator", "coordinator.dll"),
            ["serve", "--pki", federation.Directory, "--state", Path.Combine(_root, "json.db"), "--port", "0", "--json"], line =>
            {
                Log(line);
                if (line?.StartsWith('{') == true)
                {
                    stdout.Enqueue(line);
                }
            }, new Dictionary<string, string?> { ["Logging__LogLevel__Microsoft.AspNetCore"] = "Warning" });

        string listening = await serve.WaitForLineAsync(l => l.Contains("\"event\":\"listening\"", StringComparison.Ordinal), TimeSpan.FromSeconds(90));
        await serve.TerminateAsync();
        int code = await serve.WaitForExitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(0, code);
        using var parsed = System.Text.Json.JsonDocument.Parse(listening);
        int port = parsed.RootElement.GetProperty("port").GetInt32();
        Assert.InRange(port, 1, 65535);
        Assert.Equal($"https://127.0.0.1:{port}/", parsed.RootElement.GetProperty("address").GetString());
        Assert.Equal(["listening", "stopping", "stopped"], stdout.Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("event").GetString()));
        // The log's own listening line still comes, on stderr (stdout is only the JSON objects above).
        Assert.Contains("Coordinator listening on https://127.0.0.1:", serve.Tail, StringComparison.Ordinal);
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
