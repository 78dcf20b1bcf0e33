using System.Net;
using Federated.Coordinator.Dashboard;

namespace Federated.Coordinator.Tests.Dashboard;

public sealed class DashboardBindingTests
{
    private static string? NoVariables(string name) => null;

    [Fact]
    public void Resolve_NoAddressFlag_BindsLoopback()
    {
        Assert.Equal(IPAddress.Loopback, DashboardBinding.Resolve(null, NoVariables));
    }

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("192.0.2.10")]
    [InlineData("::")]
    public void Resolve_ExplicitAddress_BindsWhatItNames(string address)
    {
        Assert.Equal(IPAddress.Parse(address), DashboardBinding.Resolve(address, NoVariables));
    }

    [Theory]
    [InlineData("ASPNETCORE_URLS", "http://0.0.0.0:80")]
    [InlineData("ASPNETCORE_URLS", "http://*:5000")]
    [InlineData("ASPNETCORE_URLS", "http://127.0.0.1:5000;http://+:5001")]
    [InlineData("DOTNET_URLS", "http://dashboard.example.org:80")]
    public void Resolve_NonLoopbackUrlVariableWithoutAddressFlag_RefusedNamingTheVariable(string variable, string urls)
    {
        var ex = Assert.Throws<UsageException>(() => DashboardBinding.Resolve(null, name => name == variable ? urls : null));

        Assert.StartsWith($"{variable} asks for", ex.Message, StringComparison.Ordinal);
        Assert.Contains("non-loopback bind", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--address", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Theory]
    [InlineData("http://127.0.0.1:5000")]
    [InlineData("http://localhost:5000")]
    [InlineData("http://[::1]:5000")]
    public void Resolve_LoopbackUrlVariable_BindsLoopback(string urls)
    {
        Assert.Equal(IPAddress.Loopback, DashboardBinding.Resolve(null, name => name == "ASPNETCORE_URLS" ? urls : null));
    }

    [Fact]
    public void Resolve_ExplicitAddressFlag_WinsOverUrlVariable()
    {
        Assert.Equal(IPAddress.Any, DashboardBinding.Resolve("0.0.0.0", _ => "http://0.0.0.0:80"));
    }

    [Theory]
    [InlineData("dashboard.example.org")]
    [InlineData("0.0.0.0:80")]
    [InlineData("")]
    [InlineData("fe80::1%eth0")]
    public void Resolve_AddressNotAnIp_RefusedNamingTheFlag(string address)
    {
        var ex = Assert.Throws<UsageException>(() => DashboardBinding.Resolve(address, NoVariables));

        Assert.StartsWith("--address must be an IP address", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(65536)]
    public void Port_OutOfRange_RefusedNamingTheFlag(int port)
    {
        var ex = Assert.Throws<UsageException>(() => DashboardBinding.Port(port));

        Assert.Equal($"--port must be an integer in 0..65535, got {port}", ex.Message);
    }

    [Fact]
    public void Port_NotGiven_IsTheDefault()
    {
        Assert.Equal(DashboardBinding.DefaultPort, DashboardBinding.Port(null));
    }
}
