using System.Text.Json;
using Federated.EdgeClient.Scrubbing;
using Federated.EdgeClient.Tests.Cli;

namespace Federated.EdgeClient.Tests.Scrubbing;

public sealed class JsonlScrubberTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("scrub-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Scrub_AllDataFormats_ScrubsEveryStringAndCountsPerType()
    {
        string input = Write("data.jsonl",
            """{"text": "mail me at bob@example.org"}""",
            """{"prompt": "Card 4111 1111 1111 1111?", "completion": "Stored for 203.0.113.9"}""",
            """{"messages": [{"role": "user", "content": "SSN 123-45-6789"}, {"role": "assistant", "content": "ok"}]}""",
            """{"input_ids": [1, 2, 3]}""",
            "");
        using var output = new StringWriter();

        ScrubReport report = JsonlScrubber.Scrub(new PiiScrubber(), input, output);

        Assert.Equal(4, report.Lines);
        Assert.Equal(3, report.LinesChanged);
        Assert.Equal(new Dictionary<string, int> { ["CARD"] = 1, ["EMAIL"] = 1, ["IPV4"] = 1, ["SSN"] = 1 }, report.Counts);
        string scrubbed = output.ToString();
        Assert.Contains("mail me at [EMAIL]", scrubbed, StringComparison.Ordinal);
        Assert.Contains("\"content\":\"SSN [SSN]\"", scrubbed, StringComparison.Ordinal);
        Assert.Contains("\"input_ids\":[1,2,3]", scrubbed, StringComparison.Ordinal);
        Assert.DoesNotContain("4111", scrubbed, StringComparison.Ordinal);
        Assert.All(report.Examples.Values.SelectMany(e => e), e => Assert.DoesNotContain("bob@", e, StringComparison.Ordinal));
    }

    [Fact]
    public void Scrub_MalformedLine_ReportsFileAndLine()
    {
        string input = Write("bad.jsonl", """{"text": "fine"}""", """{"text": "broken" """);

        var ex = Assert.Throws<InvalidDataException>(() => JsonlScrubber.Scrub(new PiiScrubber(), input, null));

        Assert.StartsWith($"{input}:2:", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ScrubCommand_WritesOutputAndJsonReport()
    {
        string input = Write("in.jsonl", """{"text": "write to ann@example.com, MRN-7654321"}""");
        string outPath = Path.Combine(_dir, "out.jsonl");

        (int code, string stdout, _) = await EdgeClientProcess.RunAsync("scrub", "--data", input, "--out", outPath, "--pattern", @"MRN=MRN-\d{7}", "--json");

        Assert.Equal(0, code);
        using JsonDocument report = JsonDocument.Parse(stdout);
        Assert.Equal(2, report.RootElement.GetProperty("total").GetInt32());
        Assert.Equal(1, report.RootElement.GetProperty("counts").GetProperty("MRN").GetInt32());
        Assert.Equal("""{"text":"write to [EMAIL], [MRN]"}""", File.ReadAllText(outPath).Trim());
    }

    [Theory]
    [InlineData("missing")]
    [InlineData("malformed")]
    [InlineData("badpattern")]
    public async Task ScrubCommand_BadInput_ExitsWithTwoAndOneLine(string problem)
    {
        string input = problem == "malformed" ? Write("m.jsonl", "not json") : Write("ok.jsonl", """{"text": "hi"}""");
        string[] args = problem switch
        {
            "missing" => ["scrub", "--data", Path.Combine(_dir, "nope.jsonl")],
            "badpattern" => ["scrub", "--data", input, "--pattern", "no-equals-sign"],
            _ => ["scrub", "--data", input],
        };

        (int code, _, string stderr) = await EdgeClientProcess.RunAsync(args);

        Assert.Equal(2, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.StartsWith("edge-client:", stderr, StringComparison.Ordinal);
    }

    private string Write(string name, params string[] lines)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllLines(path, lines);
        return path;
    }
}
