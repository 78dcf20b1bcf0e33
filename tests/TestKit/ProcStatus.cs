using System.Globalization;

namespace Federated.TestKit;

/// <summary>Memory fields of a Linux /proc/PID/status file, for tests and the bench.</summary>
public static class ProcStatus
{
    /// <summary>The field (VmRSS, VmHWM, ...) of <paramref name="statusPath"/> in bytes; null when the file lacks it.</summary>
    /// <remarks>Lines read "VmHWM:\t    2032 kB": a tab, then the value right-aligned in 8 columns, so from 10 GB on no
    /// space is left between the tab and the digits.</remarks>
    public static long? Bytes(string statusPath, string field)
    {
        string prefix = field + ":";
        string? line = File.ReadLines(statusPath).FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal));
        return line is null ? null : 1024 * long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }
}
