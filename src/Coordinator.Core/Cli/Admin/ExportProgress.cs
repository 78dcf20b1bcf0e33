using System.Globalization;

namespace Federated.Coordinator.Cli;

/// <summary>
/// `run export`'s download progress on stderr: bytes received of the total, at most once per <see cref="Interval"/>
/// and always the last; redrawn in place on a terminal, one line each when stderr is a file or a pipe.
/// </summary>
internal sealed class ExportProgress(TextWriter output, TimeProvider time, bool redraw)
{
    /// <summary>The shortest time between two progress lines (the first and the last are always written).</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(500);

    private long? _lastWritten;
    private bool _lineOpen;

    /// <summary>For the console: redrawn in place unless stderr is redirected.</summary>
    public static ExportProgress ForConsole() => new(Console.Error, TimeProvider.System, redraw: !Console.IsErrorRedirected);

    public void Report(long received, long total)
    {
        long now = time.GetTimestamp();
        bool done = total > 0 && received >= total;
        if (!done && _lastWritten is { } last && time.GetElapsedTime(last, now) < Interval)
        {
            return;
        }
        _lastWritten = now;
        string line = total > 0
            ? $"coordinator: downloaded {Size(received)} of {Size(total)} ({100.0 * received / total:F0}%)"
            : $"coordinator: downloaded {Size(received)}";
        if (redraw)
        {
            output.Write("\r" + line + "\u001b[K");
            _lineOpen = !done;
            if (done)
            {
                output.WriteLine();
            }
        }
        else
        {
            output.WriteLine(line);
        }
        output.Flush();
    }

    /// <summary>Ends a line left open on a terminal (a download that stopped early), so what follows starts on its own.</summary>
    public void Finish()
    {
        if (_lineOpen)
        {
            output.WriteLine();
            _lineOpen = false;
        }
    }

    /// <summary>Bytes below 1 KiB, else KiB, MiB or GiB with one decimal.</summary>
    internal static string Size(long bytes)
    {
        string[] units = ["KiB", "MiB", "GiB"];
        if (bytes < 1024)
        {
            return bytes.ToString(CultureInfo.InvariantCulture) + " B";
        }
        double value = bytes;
        int unit = -1;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }
        return value.ToString("F1", CultureInfo.InvariantCulture) + " " + units[unit];
    }
}
