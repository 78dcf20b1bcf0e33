namespace Federated.EdgeClient.Tests.Cli;

/// <summary>`edge-client run` flag checks, in a child process so the exit code is the real one; nothing is dialled.</summary>
public sealed class RunCommandTests
{
    [Theory]
    [InlineData("https://a.example:7443,http://b.example:7443", "--coordinator entry 2 of 2 'http://b.example:7443' is not an https:// address")]
    [InlineData("https://a.example:7443,,https://b.example:7443", "--coordinator entry 2 of 3 is empty")]
    [InlineData("http://a.example:7443", "--coordinator 'http://a.example:7443' is not an https:// address")]
    public async Task Run_BadCoordinatorList_Exit2WithOneLineNamingTheEntry(string coordinators, string expected)
    {
        (int code, string stdout, string stderr) = await EdgeClientProcess.RunAsync(
            "run", "--coordinator", coordinators, "--identity", "edge.pfx", "--ca", "ca.crt", "--data", "data.jsonl", "--model", "model");

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
