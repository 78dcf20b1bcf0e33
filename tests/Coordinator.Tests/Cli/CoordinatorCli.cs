using Federated.Coordinator.Cli;

namespace Federated.Coordinator.Tests.Cli;

/// <summary>The `coordinator` command line in process, as the executable runs it (same runner, same exit codes).</summary>
internal static class CoordinatorCli
{
    public static Task<int> Run(params string[] args) => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args);

    /// <summary>`pki init --out DIRECTORY/pki`; returns that folder.</summary>
    public static async Task<string> InitPkiAsync(TempDirectory directory)
    {
        string pki = directory.File("pki");
        Assert.Equal(CliRunner.Ok, await Run("pki", "init", "--out", pki));
        return pki;
    }
}
