using System.Text;

namespace Federated.TestKit;

/// <summary>
/// Captures what a command run in process writes to Console.Out and Console.Error, without taking the console from tests
/// running beside it: Console.Out and Console.Error are replaced once by writers that forward each write to the capture
/// of the async flow that writes (an AsyncLocal), or to the real console when that flow captures nothing. Two captures
/// at once never see each other's lines, nor a parallel test's output.
/// </summary>
public static class ConsoleCapture
{
    private static readonly AsyncLocal<Capture?> s_current = new();
    private static readonly Lock s_install = new();
    private static bool s_installed;

    /// <summary>Runs <paramref name="run"/> with this flow's console output captured; returns its result and what it wrote.</summary>
    public static async Task<(int Code, string Out, string Err)> RunAsync(Func<Task<int>> run)
    {
        ArgumentNullException.ThrowIfNull(run);
        Install();
        var capture = new Capture();
        Capture? outer = s_current.Value;
        s_current.Value = capture;
        try
        {
            int code = await run();
            return (code, capture.OutText.ToString(), capture.ErrText.ToString());
        }
        finally
        {
            s_current.Value = outer;
        }
    }

    private static void Install()
    {
        lock (s_install)
        {
            if (!s_installed)
            {
                Console.SetOut(new RoutingWriter(Console.Out, c => c.Out));
                Console.SetError(new RoutingWriter(Console.Error, c => c.Err));
                s_installed = true;
            }
        }
    }

    private sealed class Capture
    {
        public Capture()
        {
            Out = TextWriter.Synchronized(OutText);
            Err = TextWriter.Synchronized(ErrText);
        }

        public StringWriter OutText { get; } = new();

        public StringWriter ErrText { get; } = new();

        public TextWriter Out { get; }

        public TextWriter Err { get; }
    }

    private sealed class RoutingWriter(TextWriter console, Func<Capture, TextWriter> select) : TextWriter
    {
        private TextWriter Target => s_current.Value is { } capture ? select(capture) : console;

        public override Encoding Encoding => console.Encoding;

        public override void Write(char value) => Target.Write(value);

        public override void Write(string? value) => Target.Write(value);

        public override void Write(char[] buffer, int index, int count) => Target.Write(buffer, index, count);

        public override void Write(ReadOnlySpan<char> buffer) => Target.Write(buffer);

        public override void WriteLine() => Target.WriteLine();

        public override void WriteLine(string? value) => Target.WriteLine(value);

        public override void WriteLine(ReadOnlySpan<char> buffer) => Target.WriteLine(buffer);

        public override void Flush() => Target.Flush();

        public override Task FlushAsync() => Target.FlushAsync();

        public override Task WriteAsync(char value) => Target.WriteAsync(value);

        public override Task WriteAsync(string? value) => Target.WriteAsync(value);

        public override Task WriteLineAsync(string? value) => Target.WriteLineAsync(value);
    }
}
