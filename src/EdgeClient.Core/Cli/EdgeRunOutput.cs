using Federated.EdgeClient.Rounds;

namespace Federated.EdgeClient.Cli;

/// <summary>
/// Where `edge-client run` says what it is doing: one "edge-client: ..." line per state change on stderr, or with
/// --json one JSON object per line on stdout (and nothing else there), so a service manager or a script can follow it.
/// </summary>
internal sealed class EdgeRunOutput(bool json, TextWriter? stdout = null, TextWriter? stderr = null)
{
    private readonly object _gate = new();

    public bool Json { get; } = json;

    public void Report(EdgeEvent change)
    {
        ArgumentNullException.ThrowIfNull(change);
        // Training reports from its own thread while the session may log a retry: one line is never interleaved with another.
        lock (_gate)
        {
            if (Json)
            {
                TextWriter writer = stdout ?? Console.Out;
                writer.WriteLine(change.ToJson());
                writer.Flush();
            }
            else
            {
                (stderr ?? Console.Error).WriteLine($"edge-client: {change.Text}");
            }
        }
    }
}
