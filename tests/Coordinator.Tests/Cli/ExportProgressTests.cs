using Federated.Coordinator.Cli;
using Microsoft.Extensions.Time.Testing;

namespace Federated.Coordinator.Tests.Cli;

public sealed class ExportProgressTests
{
    [Fact]
    public void Report_ManyChunksWithinInterval_FirstThenThrottledThenLast()
    {
        var time = new FakeTimeProvider();
        var output = new StringWriter();
        var progress = new ExportProgress(output, time, redraw: false);

        progress.Report(1024, 4096);
        progress.Report(2048, 4096); // same instant: throttled
        time.Advance(ExportProgress.Interval);
        progress.Report(3072, 4096);
        progress.Report(4096, 4096); // the last is always written

        Assert.Equal(
            [
                "coordinator: downloaded 1.0 KiB of 4.0 KiB (25%)",
                "coordinator: downloaded 3.0 KiB of 4.0 KiB (75%)",
                "coordinator: downloaded 4.0 KiB of 4.0 KiB (100%)",
            ],
            output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void Report_OnTerminal_RedrawsOneLineAndFinishEndsAnOpenOne()
    {
        var time = new FakeTimeProvider();
        var finished = new StringWriter();
        var stopped = new StringWriter();
        var complete = new ExportProgress(finished, time, redraw: true);
        var partial = new ExportProgress(stopped, time, redraw: true);

        complete.Report(512, 1024);
        time.Advance(ExportProgress.Interval);
        complete.Report(1024, 1024);
        complete.Finish();
        partial.Report(512, 1024);
        partial.Finish();

        Assert.Equal("\rcoordinator: downloaded 512 B of 1.0 KiB (50%)\u001b[K\rcoordinator: downloaded 1.0 KiB of 1.0 KiB (100%)\u001b[K" + Environment.NewLine, finished.ToString());
        Assert.Equal("\rcoordinator: downloaded 512 B of 1.0 KiB (50%)\u001b[K" + Environment.NewLine, stopped.ToString());
    }

    [Theory]
    [InlineData(0, "0 B")]
    [InlineData(1023, "1023 B")]
    [InlineData(1536, "1.5 KiB")]
    [InlineData(5L << 20, "5.0 MiB")]
    [InlineData(3L << 30, "3.0 GiB")]
    public void Size_Bytes_UnitsOf1024(long bytes, string expected) => Assert.Equal(expected, ExportProgress.Size(bytes));
}
