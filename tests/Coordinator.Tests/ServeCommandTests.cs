using Federated.Coordinator.Cli;
using Federated.Trust;

namespace Federated.Coordinator.Tests;

[Collection(Cli.ConsoleCollection.Name)]
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

    [Fact]
    public void Resolve_NoAddress_LoopbackUnlessAFlagOrSettingSaysOtherwise()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("appsettings.json"), """{ "Coordinator": { "Pki": "p" } }""");

        CoordinatorOptions quiet = ServeCommand.Resolve(new ServeCommand.Settings(), dir.Path);
        CoordinatorOptions open = ServeCommand.Resolve(new ServeCommand.Settings { Address = "0.0.0.0" }, dir.Path);

        Assert.Equal("127.0.0.1", quiet.Address);
        Assert.Equal("0.0.0.0", open.Address);
    }

    [Fact]
    public void Resolve_AtRestKeyAndRetentionFlags_OverrideAppSettings()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("appsettings.json"), """{ "Coordinator": { "Pki": "p", "AtRestKey": "json.key", "RetentionDays": 30 } }""");

        CoordinatorOptions fromJson = ServeCommand.Resolve(new ServeCommand.Settings(), dir.Path);
        CoordinatorOptions fromFlags = ServeCommand.Resolve(new ServeCommand.Settings { AtRestKey = "flag.key", RetentionDays = 7 }, dir.Path);

        Assert.Equal(("json.key", 30), (fromJson.AtRestKey, fromJson.RetentionDays));
        Assert.Equal(("flag.key", 7), (fromFlags.AtRestKey, fromFlags.RetentionDays));
    }

    [Fact]
    public async Task Serve_WrongAtRestKey_ExitsOneNamingTheKey()
    {
        using var dir = new TempDirectory();
        string pki = dir.File("pki");
        Assert.Equal(CliRunner.Ok, await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["pki", "init", "--out", pki]));
        string state = dir.File("state/state.db");
        Directory.CreateDirectory(dir.File("state/adapters"));
        using (var right = Federated.Coordinator.Storage.AtRestCipher.FromKeyFile(Path.Combine(pki, "at-rest.key")))
        {
            right.WriteFile(dir.File("state/adapters/" + new string('a', 64) + ".adapter.enc"), [1, 2, 3], "adapter/" + new string('a', 64));
        }
        Federated.Coordinator.Storage.AtRestCipher.CreateKeyFile(dir.File("other.key"));
        (int code, _, string error) = await ConsoleCapture.RunAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure,
            ["serve", "--pki", pki, "--port", "0", "--address", "127.0.0.1", "--state", state, "--at-rest-key", dir.File("other.key")]));

        Assert.Equal(CliRunner.Failed, code);
        Assert.Contains("wrong key file", error, StringComparison.Ordinal);
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

    [Fact]
    public async Task Serve_StateFileIsNotADatabase_OneLineNamingTheFileAndFlagNoTypeNames()
    {
        using var dir = new TempDirectory();
        string pki = await Cli.CoordinatorCli.InitPkiAsync(dir);
        string state = dir.File("garbage.db");
        File.WriteAllText(state, "this is not a coordinator state file, it is long enough to have a header........................................");

        (int code, _, string stderr) = await Cli.CoordinatorCli.RunCapturedAsync("serve", "--pki", pki, "--port", "0", "--state", state);

        Assert.Equal(CliRunner.Failed, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains($"cannot use the state file '{state}' (file is not a database); check --state", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", line, StringComparison.Ordinal);
        Assert.DoesNotContain("SQLite Error", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_PostgresUnreachable_ExitsOneWithOneLineNamingHostAndPortNotThePassword()
    {
        using var dir = new TempDirectory();
        string pki = await Cli.CoordinatorCli.InitPkiAsync(dir);
        // A port nothing listens on: bound, read and released.
        int port;
        using (var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        }
        string state = $"Host=127.0.0.1;Port={port};Database=federated;Username=coordinator;Password=s3cret-Pw;Timeout=3";

        (int code, string stdout, string stderr) = await Cli.CoordinatorCli.RunCapturedAsync("serve", "--pki", pki, "--port", "0", "--state", state);

        Assert.Equal(CliRunner.Failed, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains($"cannot reach the PostgreSQL state database at 127.0.0.1:{port} (postgresql://coordinator@127.0.0.1:{port}/federated)", line, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-Pw", stderr + stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_StateFileIsNotADatabaseWithVerbose_AddsTheExceptionAndItsStack()
    {
        using var dir = new TempDirectory();
        string pki = await Cli.CoordinatorCli.InitPkiAsync(dir);
        string state = dir.File("garbage.db");
        File.WriteAllText(state, "this is not a coordinator state file, it is long enough to have a header........................................");

        (int code, _, string stderr) = await Cli.CoordinatorCli.RunCapturedAsync("serve", "--pki", pki, "--port", "0", "--state", state, "--verbose");

        Assert.Equal(CliRunner.Failed, code);
        Assert.Contains("coordinator: error: cannot use the state file", stderr, StringComparison.Ordinal);
        Assert.Contains("SqliteException", stderr, StringComparison.Ordinal);
        Assert.Contains(" at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_StateFolderCannotBeCreated_OneLineAndNothingLeftBehind()
    {
        using var dir = new TempDirectory();
        string pki = await Cli.CoordinatorCli.InitPkiAsync(dir);
        // A folder where the state file should be: SQLite cannot open it.
        string state = dir.File("state-is-a-folder");
        Directory.CreateDirectory(state);

        (int code, _, string stderr) = await Cli.CoordinatorCli.RunCapturedAsync("serve", "--pki", pki, "--port", "0", "--state", state);

        Assert.Equal(CliRunner.Failed, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.Contains("cannot use the state file", line, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(state));
    }
}
