using System.Text.Json;
using System.Text.Json.Nodes;

namespace Federated.EdgeClient.Scrubbing;

/// <summary>What a scrub of a data file found: counts per type and a few examples with the data already masked.</summary>
internal sealed class ScrubReport
{
    private const int ExamplesPerType = 3;
    private const int ContextChars = 32;

    private readonly SortedDictionary<string, int> _counts = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, List<string>> _examples = new(StringComparer.Ordinal);

    public int Lines { get; private set; }

    public int LinesChanged { get; private set; }

    public IReadOnlyDictionary<string, int> Counts => _counts;

    public IReadOnlyDictionary<string, List<string>> Examples => _examples;

    public int Total => _counts.Values.Sum();

    internal void AddLine(bool changed)
    {
        Lines++;
        if (changed)
        {
            LinesChanged++;
        }
    }

    // The example is cut from the scrubbed text, so it shows the placeholder in context and never the original value.
    internal void Add(PiiMatch match, string scrubbed, int placeholderStart)
    {
        string key = match.Type == PiiType.Custom ? match.Label : PiiMatch.PlaceholderName(match.Type);
        _counts[key] = _counts.GetValueOrDefault(key) + 1;
        if (!_examples.TryGetValue(key, out List<string>? examples))
        {
            examples = [];
            _examples[key] = examples;
        }
        if (examples.Count < ExamplesPerType)
        {
            int from = Math.Max(0, placeholderStart - ContextChars);
            int to = Math.Min(scrubbed.Length, placeholderStart + match.Placeholder.Length + ContextChars);
            string snippet = scrubbed[from..to].ReplaceLineEndings(" ");
            examples.Add((from > 0 ? "…" : "") + snippet + (to < scrubbed.Length ? "…" : ""));
        }
    }
}

/// <summary>Scrubs every string value of a JSONL data file (text, prompt, completion, message contents) line by line.</summary>
internal static class JsonlScrubber
{
    /// <summary>Scrubs <paramref name="inputPath"/>; writes the result to <paramref name="output"/> when given.</summary>
    /// <exception cref="InvalidDataException">A line is not a JSON object; the message names file and line.</exception>
    public static ScrubReport Scrub(PiiScrubber scrubber, string inputPath, TextWriter? output, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(scrubber);
        var report = new ScrubReport();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(inputPath))
        {
            cancellationToken.ThrowIfCancellationRequested();
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                output?.WriteLine(line);
                continue;
            }
            JsonNode? node;
            try
            {
                node = JsonNode.Parse(line);
            }
            catch (JsonException ex)
            {
                throw new InvalidDataException($"{inputPath}:{lineNumber}: not valid JSON ({ex.Message.Split('.')[0]})", ex);
            }
            if (node is not JsonObject obj)
            {
                throw new InvalidDataException($"{inputPath}:{lineNumber}: expected a JSON object per line");
            }
            bool changed = ScrubNode(scrubber, obj, report);
            report.AddLine(changed);
            output?.WriteLine(obj.ToJsonString());
        }
        return report;
    }

    /// <summary>Scrubs one text and records what was found.</summary>
    public static string ScrubText(PiiScrubber scrubber, string text, ScrubReport report)
    {
        var found = new List<PiiMatch>();
        string scrubbed = scrubber.Scrub(text, found);
        int shift = 0;
        foreach (PiiMatch match in found)
        {
            report.Add(match, scrubbed, match.Start + shift);
            shift += match.Placeholder.Length - match.Length;
        }
        return scrubbed;
    }

    private static bool ScrubNode(PiiScrubber scrubber, JsonNode node, ScrubReport report)
    {
        bool changed = false;
        if (node is JsonObject obj)
        {
            foreach (string key in obj.Select(p => p.Key).ToArray())
            {
                changed |= ScrubChild(scrubber, obj[key], text => obj[key] = text, report);
            }
        }
        else if (node is JsonArray array)
        {
            for (int i = 0; i < array.Count; i++)
            {
                int index = i;
                changed |= ScrubChild(scrubber, array[index], text => array[index] = text, report);
            }
        }
        return changed;
    }

    private static bool ScrubChild(PiiScrubber scrubber, JsonNode? child, Action<string> replace, ScrubReport report)
    {
        if (child is JsonValue value && value.TryGetValue(out string? text))
        {
            string scrubbed = ScrubText(scrubber, text, report);
            if (ReferenceEquals(scrubbed, text))
            {
                return false;
            }
            replace(scrubbed);
            return true;
        }
        return child is not null && ScrubNode(scrubber, child, report);
    }
}
