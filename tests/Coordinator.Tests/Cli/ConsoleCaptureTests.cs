namespace Federated.Coordinator.Tests.Cli;

/// <summary>The test kit's console capture: each capture sees only what its own async flow wrote.</summary>
public sealed class ConsoleCaptureTests
{
    [Fact]
    public async Task RunAsync_TwoCapturesAndAnUncapturedWriterAtOnce_EachCaptureHoldsOnlyItsOwnLines()
    {
        using var bothWriting = new Barrier(3);
        Task<(int, string, string)> Writer(string name) => ConsoleCapture.RunAsync(() => Task.Run(() =>
        {
            for (int i = 0; i < 200; i++)
            {
                Console.WriteLine($"{name} out {i}");
                Console.Error.WriteLine($"{name} err {i}");
                if (i == 0)
                {
                    bothWriting.SignalAndWait(TimeSpan.FromMinutes(1));
                }
            }
            return name.Length;
        }));
        Task<(int, string, string)> first = Writer("first");
        Task<(int, string, string)> second = Writer("second");
        Task outside = Task.Run(() =>
        {
            bothWriting.SignalAndWait(TimeSpan.FromMinutes(1));
            for (int i = 0; i < 200; i++)
            {
                Console.WriteLine($"outside {i}");
            }
        });
        await Task.WhenAll(first, second, outside);

        foreach ((string name, (int code, string stdout, string stderr)) in new[] { ("first", await first), ("second", await second) })
        {
            Assert.Equal(name.Length, code);
            Assert.Equal(Enumerable.Range(0, 200).Select(i => $"{name} out {i}"), stdout.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries));
            Assert.Equal(Enumerable.Range(0, 200).Select(i => $"{name} err {i}"), stderr.Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries));
        }
    }
}
