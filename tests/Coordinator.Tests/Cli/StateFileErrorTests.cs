namespace Federated.Coordinator.Tests.Cli;

/// <summary>A state file SQLite cannot use is one line naming the file and --state, for each command that opens one.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class StateFileErrorTests
{
    [Fact]
    public async Task AuditVerify_StateFileIsNotADatabase_ExitOneWithOneLineNamingFileAndFlag()
    {
        using var dir = new TempDirectory();
        string state = dir.File("garbage.db");
        File.WriteAllText(state, "this is not a coordinator state file, it is long enough to have a header........................................");

        (int code, _, string stderr) = await CoordinatorCli.RunCapturedAsync("audit", "verify", "--state", state);

        Assert.Equal(CliRunner.Failed, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Equal($"coordinator: error: cannot use the state file '{state}' (file is not a database); check --state names the coordinator's state file (serve --state)", line);
    }
}
