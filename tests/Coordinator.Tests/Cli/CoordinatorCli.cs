using Federated.Coordinator.Cli;

namespace Federated.Coordinator.Tests.Cli;

/// <summary>The `coordinator` command line in process, as the executable runs it (same runner, same exit codes).</summary>
internal static class CoordinatorCli
{
    public static Task<int> Run(params string[] args) => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args);

    /// <summary>Runs the command with its Console.Out and Console.Error captured (ConsoleCapture: this flow's writes only).</summary>
    public static Task<(int Code, string Out, string Err)> RunCapturedAsync(params string[] args) => ConsoleCapture.RunAsync(() => Run(args));

    /// <summary>`pki init --pki DIRECTORY/pki`; returns that folder.</summary>
    public static async Task<string> InitPkiAsync(TempDirectory directory)
    {
        string pki = directory.File("pki");
        Assert.Equal(CliRunner.Ok, await Run("pki", "init", "--pki", pki));
        return pki;
    }
}
