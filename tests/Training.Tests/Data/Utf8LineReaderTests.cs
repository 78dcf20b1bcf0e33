using Federated.Training.Data;

namespace Federated.Training.Tests.Data;

public sealed class Utf8LineReaderTests
{
    [Fact]
    public void Read_LineOverTheLimit_IsAnErrorAndTheNextLineIsIntact()
    {
        using var folder = new ScratchFolder();
        string path = folder.WriteLines("lines.txt", "short", new string('x', 100), "after");

        RawLine[] lines = Utf8LineReader.Read(path, maxLineChars: 10).ToArray();

        Assert.Equal(3, lines.Length);
        Assert.Equal("short", lines[0].Text);
        Assert.Null(lines[1].Text);
        Assert.Contains("over 10 characters", lines[1].Error);
        Assert.Equal("after", lines[2].Text);
    }

    [Fact]
    public void Read_NoFinalNewline_KeepsTheLastLine()
    {
        using var folder = new ScratchFolder();
        string path = folder.File("lines.txt");
        File.WriteAllText(path, "a\nb\n\nc");

        Assert.Equal(new[] { "a", "b", "", "c" }, Utf8LineReader.Read(path, 100).Select(l => l.Text));
    }
}
