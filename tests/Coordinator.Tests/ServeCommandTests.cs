using Federated.Coordinator.Cli;

namespace Federated.Coordinator.Tests;

public sealed class ServeCommandTests
{
    [Fact]
    public void Resolve_AppSettingsEnvironmentAndFlags_FlagsWinThenEnvironment()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("appsettings.json"),
            """{ "Coordinator": { "Pki": "from-json", "Port": 1111, "State": "json.db", "HeartbeatIntervalSeconds": 7 } }""");
        Environment.SetEnvironmentVariable("FEDERATED_Coordinator__Port", "2222");
        Environment.SetEnvironmentVariable("FEDERATED_Coordinator__State", "env.db");
        try
        {
            CoordinatorOptions options = ServeCommand.Resolve(new ServeCommand.Settings { Port = 3333 }, dir.Path);

            Assert.Equal(("from-json", 3333, "env.db", 7), (options.Pki, options.Port, options.State, options.HeartbeatIntervalSeconds));
        }
        finally
        {
            Environment.SetEnvironmentVariable("FEDERATED_Coordinator__Port", null);
            Environment.SetEnvironmentVariable("FEDERATED_Coordinator__State", null);
        }
    }

    [Theory]
    [InlineData("--port", "70000")]
    [InlineData("--address", "not-an-ip")]
    public async Task Serve_InvalidSetting_ExitsTwo(string flag, string value)
    {
        using var dir = new TempDirectory();
        int code = await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["serve", "--pki", dir.Path, flag, value]);
        Assert.Equal(CliRunner.BadUsage, code);
    }

    [Fact]
    public async Task Serve_MissingPkiFiles_ExitsOneWithoutCreatingState()
    {
        using var dir = new TempDirectory();
        string state = dir.File("state.db");
        int code = await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["serve", "--pki", dir.File("nothing"), "--port", "0", "--state", state]);
        Assert.Equal(CliRunner.Failed, code);
        Assert.False(File.Exists(state));
    }
}
