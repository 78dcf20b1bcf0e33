using System.Text.Json;
using Federated.Training.Tokenization;

namespace Federated.Training.Data;

/// <summary>A JSONL training or evaluation file turned into <see cref="TokenizedExample"/>s.</summary>
/// <remarks>
/// One JSON object a line, in one of four formats (other fields are ignored; blank lines are skipped):
/// <list type="bullet">
/// <item><c>{"text": "..."}</c>: BOS text EOS, loss on every token after BOS.</item>
/// <item><c>{"prompt": "...", "completion": "..."}</c>: BOS prompt completion EOS, loss on the completion and EOS only.</item>
/// <item><c>{"messages": [{"role": "user", "content": "..."}, ...]}</c>: <see cref="ChatTemplate"/>, loss on assistant turns.</item>
/// <item><c>{"input_ids": [1, 2, ...]}</c>: ids taken as they are (no BOS/EOS added), loss on every token.</item>
/// </list>
/// </remarks>
public sealed class JsonlDataset
{
    /// <summary>Longest line accepted; longer ones are malformed (a guard against a wrong file, not a limit on data).</summary>
    public const int MaxLineChars = 16 << 20;

    private JsonlDataset(string sourceName, IReadOnlyList<TokenizedExample> examples, IReadOnlyList<MalformedLine> skipped,
        int recordCount, int recordsWithoutTargets)
    {
        SourceName = sourceName;
        Examples = examples;
        SkippedLines = skipped;
        RecordCount = recordCount;
        RecordsWithoutTargets = recordsWithoutTargets;
    }

    /// <summary>The file path (or the name given to <see cref="Parse"/>) used in messages.</summary>
    public string SourceName { get; }

    /// <summary>Training sequences: one per record, or packed blocks when <see cref="DatasetOptions.Pack"/> is set.</summary>
    public IReadOnlyList<TokenizedExample> Examples { get; }

    /// <summary>Malformed lines skipped under <see cref="MalformedLinePolicy.Skip"/>.</summary>
    public IReadOnlyList<MalformedLine> SkippedLines { get; }

    /// <summary>Well-formed records read.</summary>
    public int RecordCount { get; }

    /// <summary>Records dropped because truncation left them nothing to learn (a prompt longer than MaxLength).</summary>
    public int RecordsWithoutTargets { get; }

    /// <summary>Positions that carry a loss, over all examples.</summary>
    public long TargetTokens => Examples.Sum(e => (long)e.Labels.Count(l => l != TokenizedExample.IgnoreIndex));

    /// <summary>Reads and tokenizes a JSONL file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="DatasetFormatException">A malformed line under <see cref="MalformedLinePolicy.Stop"/>.</exception>
    public static JsonlDataset Load(string path, ITextTokenizer tokenizer, DatasetOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"data file not found: {path}", path);
        }
        return Build(Utf8LineReader.Read(path, MaxLineChars), path, tokenizer, options, cancellationToken);
    }

    /// <summary>Tokenizes JSONL lines already in memory; <paramref name="sourceName"/> names them in messages.</summary>
    public static JsonlDataset Parse(IEnumerable<string> lines, string sourceName, ITextTokenizer tokenizer,
        DatasetOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lines);
        return Build(lines.Select(l => new RawLine(l, null)), sourceName, tokenizer, options, cancellationToken);
    }

    private static JsonlDataset Build(IEnumerable<RawLine> lines, string sourceName, ITextTokenizer tokenizer,
        DatasetOptions? options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sourceName);
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new DatasetOptions();

        var sequences = new List<TokenSequence>();
        var skipped = new List<MalformedLine>();
        int lineNumber = 0;
        foreach (RawLine line in lines)
        {
            cancellationToken.ThrowIfCancellationRequested();
            lineNumber++;
            if (line.Error is null && string.IsNullOrWhiteSpace(line.Text))
            {
                continue;
            }
            try
            {
                sequences.Add(ParseRecord(line.Error is null ? line.Text! : throw new RecordException(line.Error), tokenizer, options));
            }
            catch (RecordException ex)
            {
                var malformed = new MalformedLine(sourceName, lineNumber, ex.Message, ex.Column);
                if (options.MalformedLines == MalformedLinePolicy.Stop)
                {
                    throw new DatasetFormatException(malformed);
                }
                skipped.Add(malformed);
            }
        }

        int withoutTargets = 0;
        var examples = new List<TokenizedExample>();
        if (options.Pack)
        {
            var stream = new TokenSequence();
            foreach (TokenSequence sequence in sequences)
            {
                for (int i = 0; i < sequence.Count; i++)
                {
                    stream.Add(sequence.Ids[i], sequence.IsTarget[i]);
                }
            }
            for (int start = 0; start < stream.Count; start += options.MaxLength)
            {
                TokenizedExample block = stream.ToExample(start, Math.Min(options.MaxLength, stream.Count - start));
                if (HasTarget(block))
                {
                    examples.Add(block);
                }
            }
        }
        else
        {
            foreach (TokenSequence sequence in sequences)
            {
                TokenizedExample example = sequence.ToExample(0, Math.Min(options.MaxLength, sequence.Count));
                if (HasTarget(example))
                {
                    examples.Add(example);
                }
                else
                {
                    withoutTargets++;
                }
            }
        }
        return new JsonlDataset(sourceName, examples, skipped, sequences.Count, withoutTargets);
    }

    private static bool HasTarget(TokenizedExample example) =>
        Array.Exists(example.Labels, l => l != TokenizedExample.IgnoreIndex);

    private static TokenSequence ParseRecord(string line, ITextTokenizer tokenizer, DatasetOptions options)
    {
        if (line.Length > MaxLineChars)
        {
            throw new RecordException($"line is {line.Length} characters, more than the {MaxLineChars} allowed");
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException ex)
        {
            // The parser's own position (LineNumber 0 | BytePositionInLine n) becomes the file's column.
            throw new RecordException($"not valid JSON: {JsonMessage(ex)}", ex.BytePositionInLine is { } position ? (int)position + 1 : null);
        }
        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new RecordException($"expected a JSON object, found {root.ValueKind}");
            }
            var formats = new List<string>();
            bool hasIds = root.TryGetProperty("input_ids", out JsonElement ids);
            bool hasMessages = root.TryGetProperty("messages", out JsonElement messages);
            bool hasPrompt = root.TryGetProperty("prompt", out JsonElement prompt);
            bool hasCompletion = root.TryGetProperty("completion", out JsonElement completion);
            bool hasText = root.TryGetProperty("text", out JsonElement text);
            if (hasIds)
            {
                formats.Add("input_ids");
            }
            if (hasMessages)
            {
                formats.Add("messages");
            }
            if (hasPrompt || hasCompletion)
            {
                formats.Add("prompt/completion");
            }
            if (hasText)
            {
                formats.Add("text");
            }
            if (formats.Count == 0)
            {
                throw new RecordException("no \"text\", \"prompt\"/\"completion\", \"messages\" or \"input_ids\" field");
            }
            if (formats.Count > 1)
            {
                throw new RecordException($"fields of more than one format ({string.Join(", ", formats)})");
            }

            var sequence = new TokenSequence();
            if (hasIds)
            {
                ReadInputIds(ids, tokenizer.VocabSize, sequence);
                return sequence;
            }
            if (hasMessages)
            {
                ChatTemplate.Append(sequence, ReadMessages(messages), tokenizer, options.AddBos);
                return sequence;
            }

            if (options.AddBos && tokenizer.BosId is int bos)
            {
                sequence.Add(bos, isTarget: false);
            }
            if (hasText)
            {
                sequence.AddText(tokenizer, RequireString(text, "text"), isTarget: true);
            }
            else
            {
                if (!hasPrompt || !hasCompletion)
                {
                    throw new RecordException(hasPrompt ? "\"prompt\" without \"completion\"" : "\"completion\" without \"prompt\"");
                }
                sequence.AddText(tokenizer, RequireString(prompt, "prompt"), isTarget: false);
                sequence.AddText(tokenizer, RequireString(completion, "completion"), isTarget: true);
            }
            if (options.AddEos)
            {
                sequence.Add(tokenizer.EosId, isTarget: true);
            }
            if (sequence.Count < 2)
            {
                throw new RecordException("the record has no tokens to learn (empty text and no EOS)");
            }
            return sequence;
        }
    }

    private static string RequireString(JsonElement value, string name) =>
        value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new RecordException($"\"{name}\" must be a string, found {value.ValueKind}");

    private static void ReadInputIds(JsonElement ids, int vocabSize, TokenSequence sequence)
    {
        if (ids.ValueKind != JsonValueKind.Array)
        {
            throw new RecordException($"\"input_ids\" must be an array, found {ids.ValueKind}");
        }
        int index = 0;
        foreach (JsonElement id in ids.EnumerateArray())
        {
            if (id.ValueKind != JsonValueKind.Number || !id.TryGetInt32(out int value) || value < 0 || value >= vocabSize)
            {
                throw new RecordException($"input_ids[{index}] = {id.GetRawText()} is not an integer in [0, {vocabSize - 1}]");
            }
            sequence.Add(value, isTarget: true);
            index++;
        }
        if (index < 2)
        {
            throw new RecordException($"\"input_ids\" has {index} ids; at least 2 are needed to predict one");
        }
    }

    private static List<ChatMessage> ReadMessages(JsonElement messages)
    {
        List<ChatMessage> result;
        try
        {
            result = ChatTemplate.ReadMessages(messages);
        }
        catch (FormatException ex)
        {
            throw new RecordException(ex.Message);
        }
        if (!result.Exists(m => m.Role == ChatTemplate.Assistant))
        {
            throw new RecordException("\"messages\" has no assistant turn, so nothing to learn");
        }
        return result;
    }

    /// <summary>A JSON parser message without its type names and position suffix ("... LineNumber: 0 | BytePositionInLine: 22.").</summary>
    public static string JsonMessage(JsonException ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        string message = ex.Message;
        int at = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        if (at < 0)
        {
            at = message.IndexOf(" Path:", StringComparison.Ordinal);
        }
        return (at >= 0 ? message[..at] : message).TrimEnd('.', ' ');
    }

    /// <summary>Why one record is unusable; becomes a <see cref="MalformedLine"/> with file, line and (for a JSON error) column.</summary>
    private sealed class RecordException(string message, int? column = null) : Exception(message)
    {
        public int? Column { get; } = column;
    }
}
