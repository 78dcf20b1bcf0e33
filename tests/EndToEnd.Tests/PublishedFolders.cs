using System.Diagnostics;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The output of docs/deploy/publish.sh, run once as an operator runs it (`publish.sh OUT`), on a copy of the sources
/// without any build output: OUT/coordinator and OUT/edge-client, with the script's exit code, its output and how long
/// it took.
/// </summary>
/// <remarks>
/// Why a copy and not the repository itself: `dotnet publish -r linux-x64` restores every project of the graph for that
/// runtime, rewriting src/*/obj/project.assets.json, while `dotnet test Federated.sln` may still be building other test
/// projects from those files. The copy leaves this build alone and publishes from scratch, as a fresh checkout does.
/// </remarks>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PublishedFolders : IAsyncLifetime
{
    private static readonly TimeSpan s_publishLimit = TimeSpan.FromMinutes(15);

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "federated-publish-" + Guid.NewGuid().ToString("N")[..12]);

    /// <summary>The OUT folder given to the script.</summary>
    public string Output => Path.Combine(Root, "out");

    /// <summary>The script's exit code (-1 when it ran past its limit and was killed).</summary>
    public int ExitCode { get; private set; } = -1;

    /// <summary>Everything the script and `dotnet publish` wrote, stdout and stderr together.</summary>
    public string Log { get; private set; } = "";

    public TimeSpan Elapsed { get; private set; }

    /// <summary>OUT/NAME/NAME, the executable the recipe put there; fails the calling test with the script's output when it failed.</summary>
    public string Executable(string name)
    {
        Assert.True(ExitCode == 0, $"publish.sh exited with {ExitCode} after {Elapsed.TotalSeconds:F0} s:\n{Log}");
        return Path.Combine(Output, name, name);
    }

    public async Task InitializeAsync()
    {
        string repository = RepositoryRoot();
        string checkout = Path.Combine(Root, "checkout");
        CopySources(repository, checkout);
        string log = Path.Combine(Root, "publish.log");

        // Output to a file, not a pipe: the build servers dotnet publish starts inherit its stdout, and a pipe would
        // stay open (and a reader waiting) until they exit, minutes later.
        var start = new ProcessStartInfo("bash") { UseShellExecute = false, WorkingDirectory = Root };
        foreach (string argument in (string[])["-c", "exec \"$0\" \"$1\" >\"$2\" 2>&1", Path.Combine(checkout, "docs", "deploy", "publish.sh"), Output, log])
        {
            start.ArgumentList.Add(argument);
        }
        // As from an operator's shell: nothing of the MSBuild that runs this test (its SDK paths, node settings) leaks
        // into the publish, and no MSBuild worker node outlives it.
        foreach (string inherited in start.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(inherited);
        }
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";

        var clock = Stopwatch.StartNew();
        using Process publish = Process.Start(start) ?? throw new InvalidOperationException("could not start bash");
        using var limit = new CancellationTokenSource(s_publishLimit);
        try
        {
            await publish.WaitForExitAsync(limit.Token);
            ExitCode = publish.ExitCode;
        }
        catch (OperationCanceledException)
        {
            publish.Kill(entireProcessTree: true);
            await publish.WaitForExitAsync();
        }
        Elapsed = clock.Elapsed;
        Log = File.Exists(log) ? await File.ReadAllTextAsync(log) : "(no output)";
        if (ExitCode == -1)
        {
            Log += $"\n(killed after {s_publishLimit})";
        }
    }

    public Task DisposeAsync()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
        return Task.CompletedTask;
    }

    /// <summary>The checkout this test was built from (the folder holding Federated.sln).</summary>
    public static string RepositoryRoot()
    {
        string? directory = AppContext.BaseDirectory;
        while (directory is not null && !File.Exists(Path.Combine(directory, "Federated.sln")))
        {
            directory = Path.GetDirectoryName(directory);
        }
        return directory ?? throw new InvalidOperationException("Federated.sln not found above the test output");
    }

    // What the recipe builds from: the root's files (props, targets, global.json, .editorconfig), src/, build/ (the
    // TorchSharp fix) and the script itself; never bin/ or obj/, which a fresh checkout does not have.
    private static void CopySources(string repository, string checkout)
    {
        Directory.CreateDirectory(checkout);
        foreach (string file in Directory.EnumerateFiles(repository))
        {
            File.Copy(file, Path.Combine(checkout, Path.GetFileName(file)));
        }
        foreach (string folder in (string[])["src", "build", Path.Combine("docs", "deploy")])
        {
            CopyFolder(Path.Combine(repository, folder), Path.Combine(checkout, folder));
        }
    }

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.EnumerateFiles(from))
        {
            string target = Path.Combine(to, Path.GetFileName(file));
            File.Copy(file, target);
            // publish.sh keeps its executable bit, as git checks it out.
            File.SetUnixFileMode(target, File.GetUnixFileMode(file));
        }
        foreach (string folder in Directory.EnumerateDirectories(from))
        {
            string name = Path.GetFileName(folder);
            if (name is not ("bin" or "obj"))
            {
                CopyFolder(folder, Path.Combine(to, name));
            }
        }
    }
}
