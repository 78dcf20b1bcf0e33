using Federated.TestKit;

namespace Federated.EndToEnd.Tests;

public sealed class ProcStatusTests : IDisposable
{
    private readonly string _path = Path.Combine(Path.GetTempPath(), $"federated-status-{Guid.NewGuid():N}");

    public void Dispose() => File.Delete(_path);

    [Fact]
    public void Bytes_ValuesBelowAndFrom10GB_ParsedAfterTheTab()
    {
        // Below 10 GB the 8-column value is space-padded after the tab; from 10 GB on the digits follow the tab directly
        // (the 8B bf16 bench's 16.2 GB peak failed on "kB" when only spaces separated the fields).
        File.WriteAllLines(_path, ["Name:\tdotnet", "VmHWM:\t16229978 kB", "VmRSS:\t    2032 kB"]);

        Assert.Equal(16229978L * 1024, ProcStatus.Bytes(_path, "VmHWM"));
        Assert.Equal(2032L * 1024, ProcStatus.Bytes(_path, "VmRSS"));
        Assert.Null(ProcStatus.Bytes(_path, "VmSwap"));
    }

    [Fact]
    public void Bytes_ThisProcess_PeakAtLeastTheCurrentResidentSet()
    {
        // One snapshot of the file: read twice, the resident set may grow past the peak read a moment earlier.
        File.WriteAllText(_path, File.ReadAllText("/proc/self/status"));
        long? peak = ProcStatus.Bytes(_path, "VmHWM");
        long? now = ProcStatus.Bytes(_path, "VmRSS");

        Assert.NotNull(peak);
        Assert.True(now > 0 && peak >= now, $"VmHWM {peak}, VmRSS {now}");
    }
}
