using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `coordinator dashboard` as the real executable: bad flags and binds are one line with exit 2, a port in use one line
/// with exit 1, and an unreachable coordinator is shown on the page rather than crashing the dashboard.
/// </summary>
public sealed class DashboardCommandTests : IDisposable
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromSeconds(90);
    private static readonly string s_coordinator = DotnetProcess.BuildOutput("Coordinator", "coordinator.dll");
    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-dashboard-cli-" + Guid.NewGuid().ToString("N"));
    private readonly Lazy<TestFederation> _federation;

    public DashboardCommandTests() => _federation = new(() => TestFederation.Create(Path.Combine(_root, "pki"), ["alice"]));

    // The connection flags may also come from the environment: cleared, so only what a test passes counts.
    private static Dictionary<string, string?> Clean(params (string Key, string? Value)[] extra)
    {
        var environment = new Dictionary<string, string?>
        {
            ["FEDERATED_COORDINATOR"] = null, ["FEDERATED_IDENTITY"] = null, ["FEDERATED_CA"] = null, ["ASPNETCORE_URLS"] = null, ["DOTNET_URLS"] = null,
        };
        foreach ((string key, string? value) in extra)
        {
            environment[key] = value;
        }
        return environment;
    }

    private static string OneLine(string stderr) => Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    [Fact]
    public async Task Dashboard_NoIdentity_Exit2NamingTheFlag()
    {
        (int code, string stdout, string stderr) = await DotnetProcess.RunAsync(s_coordinator,
            ["dashboard", "--coordinator", "https://127.0.0.1:1", "--ca", _federation.Value.CaPath], s_timeout, Clean());

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains("--identity is required", OneLine(stderr), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dashboard_NoCa_Exit2NamingTheFlag()
    {
        (int code, _, string stderr) = await DotnetProcess.RunAsync(s_coordinator,
            ["dashboard", "--coordinator", "https://127.0.0.1:1", "--identity", _federation.Value.Identity("engineer")], s_timeout, Clean());

        Assert.Equal(2, code);
        Assert.Contains("--ca is required", OneLine(stderr), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dashboard_NonLoopbackUrlVariableWithoutAddress_Exit2OneLine()
    {
        (int code, string stdout, string stderr) = await DotnetProcess.RunAsync(s_coordinator,
            ["dashboard", "--coordinator", "https://127.0.0.1:1", "--identity", _federation.Value.Identity("engineer"), "--ca", _federation.Value.CaPath, "--port", "0"],
            s_timeout, Clean(("ASPNETCORE_URLS", "http://0.0.0.0:8080")));

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        string line = OneLine(stderr);
        Assert.Contains("ASPNETCORE_URLS asks for 'http://0.0.0.0:8080', a non-loopback bind", line, StringComparison.Ordinal);
        Assert.Contains("--address", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dashboard_AddressNotAnIp_Exit2OneLine()
    {
        (int code, _, string stderr) = await DotnetProcess.RunAsync(s_coordinator,
            ["dashboard", "--coordinator", "https://127.0.0.1:1", "--identity", _federation.Value.Identity("engineer"), "--ca", _federation.Value.CaPath, "--address", "everywhere"],
            s_timeout, Clean());

        Assert.Equal(2, code);
        Assert.Contains("--address must be an IP address", OneLine(stderr), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dashboard_PortInUse_Exit1OneLine()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;

        (int code, string stdout, string stderr) = await DotnetProcess.RunAsync(s_coordinator,
            ["dashboard", "--coordinator", "https://127.0.0.1:1", "--identity", _federation.Value.Identity("officer"), "--ca", _federation.Value.CaPath,
                "--port", port.ToString(CultureInfo.InvariantCulture)], s_timeout, Clean());

        Assert.Equal(1, code);
        Assert.Equal("", stdout);
        Assert.Contains($"dashboard port {port} on 127.0.0.1 is in use", OneLine(stderr), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dashboard_CoordinatorUnreachable_PageSaysSoOnLoopback()
    {
        // A port that nothing listens on: bound and released.
        int closed;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            closed = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        using DotnetProcess dashboard = DotnetProcess.Start(s_coordinator,
            ["dashboard", "--coordinator", $"https://127.0.0.1:{closed}", "--identity", _federation.Value.Identity("engineer"), "--ca", _federation.Value.CaPath, "--port", "0"],
            environment: Clean());
        string line = await dashboard.WaitForLineAsync(l => l.StartsWith("dashboard: ", StringComparison.Ordinal), s_timeout);
        var address = new Uri(line.Split(' ')[1]);
        Assert.Equal(IPAddress.Loopback, IPAddress.Parse(address.Host));

        using var http = new HttpClient();
        string page = await http.GetStringAsync(address);

        Assert.Contains("<span id=\"role\">engineer</span>", page, StringComparison.Ordinal);
        Assert.Contains("Unavailable: cannot reach the coordinator", page, StringComparison.Ordinal);
        Assert.False(dashboard.HasExited);
    }

    [Fact]
    public async Task Dashboard_JsonOnExplicitAddress_ListeningEventAndAWarningLine()
    {
        using DotnetProcess dashboard = DotnetProcess.Start(s_coordinator,
            ["dashboard", "--coordinator", "https://127.0.0.1:1", "--identity", _federation.Value.Identity("officer"), "--ca", _federation.Value.CaPath,
                "--port", "0", "--address", "0.0.0.0", "--json"],
            environment: Clean());

        string warning = await dashboard.WaitForLineAsync(l => l.StartsWith("coordinator: the dashboard listens on 0.0.0.0", StringComparison.Ordinal), s_timeout);
        string line = await dashboard.WaitForLineAsync(l => l.StartsWith('{'), s_timeout);

        Assert.Contains("officer identity may read", warning, StringComparison.Ordinal);
        using var json = System.Text.Json.JsonDocument.Parse(line);
        Assert.Equal("listening", json.RootElement.GetProperty("event").GetString());
        Assert.Equal("officer", json.RootElement.GetProperty("role").GetString());
        int port = json.RootElement.GetProperty("port").GetInt32();
        Assert.InRange(port, 1, 65535);
        // Not loopback-only: answered on loopback with any Host header (the page is refused by the coordinator, not by the bind).
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/");
        request.Headers.Host = "dashboard.example.org";
        using HttpResponseMessage response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
            // No test made it.
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }
}
