using Federated.Coordinator.Cli;

namespace Federated.Coordinator.Tests.Cli;

/// <summary>The `coordinator` command line in process, as the executable runs it (same runner, same exit codes).</summary>
internal static class CoordinatorCli
{
    public static Task<int> Run(params string[] args) => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args);

    /// <summary>Runs the command with Console.Out and Console.Error captured (callers belong to the Console collection).</summary>
    public static async Task<(int Code, string Out, string Err)> RunCapturedAsync(params string[] args)
    {
        TextWriter originalOut = Console.Out, originalErr = Console.Error;
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int code = await Run(args);
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(originalOut);
            Console.SetError(originalErr);
        }
    }

    /// <summary>`pki init --pki DIRECTORY/pki`; returns that folder.</summary>
    public static async Task<string> InitPkiAsync(TempDirectory directory)
    {
        string pki = directory.File("pki");
        Assert.Equal(CliRunner.Ok, await Run("pki", "init", "--pki", pki));
        return pki;
    }
}
