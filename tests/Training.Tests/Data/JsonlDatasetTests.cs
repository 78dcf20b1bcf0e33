using Federated.Training.Data;
using Federated.Training.Tokenization;

namespace Federated.Training.Tests.Data;

public sealed class JsonlDatasetTests
{
    private const int Ignore = TokenizedExample.IgnoreIndex;

    [Fact]
    public void Parse_TextRecord_LearnsEveryTokenAfterBosThroughEos()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        JsonlDataset dataset = JsonlDataset.Parse(["""{"text": "abc"}"""], "mem", tokenizer);

        TokenizedExample example = Assert.Single(dataset.Examples);
        int a = 3 + 'a', b = 3 + 'b', c = 3 + 'c';
        Assert.Equal(new[] { 0, a, b, c, 1 }, example.InputIds);
        Assert.Equal(new[] { a, b, c, 1, Ignore }, example.Labels);
        Assert.Equal(4, dataset.TargetTokens);
    }

    [Fact]
    public void Parse_TokenizerWithoutBos_StartsWithTheText()
    {
        using var folder = new ScratchFolder();
        ByteLevelTokenizerWriter.Write(folder.Path);
        // Qwen2-style: no BOS token at all.
        File.WriteAllText(folder.File(HuggingFaceTokenizer.ConfigFileName), """{"bos_token": null, "eos_token": "</s>"}""");
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(folder.Path);

        TokenizedExample example = Assert.Single(JsonlDataset.Parse(["""{"text": "ab"}"""], "mem", tokenizer).Examples);

        Assert.Equal(new[] { 3 + 'a', 3 + 'b', 1 }, example.InputIds);
        Assert.Equal(new[] { 3 + 'b', 1, Ignore }, example.Labels);
    }

    [Fact]
    public void Parse_PromptCompletion_PromptPositionsCarryNoLoss()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        int[] prompt = tokenizer.Encode("Q: 2+2?");
        int[] completion = tokenizer.Encode(" A: 4");

        JsonlDataset dataset = JsonlDataset.Parse(
            ["""{"prompt": "Q: 2+2?", "completion": " A: 4", "id": 7}"""], "mem", tokenizer);

        TokenizedExample example = Assert.Single(dataset.Examples);
        Assert.Equal([0, .. prompt, .. completion, 1], example.InputIds);
        // Label i is the target at position i: the prompt's tokens (and BOS) are never targets, the completion and
        // EOS are. Position `prompt.Length` (the last prompt token) predicts the first completion token.
        int firstTargetPosition = prompt.Length;
        Assert.All(example.Labels[..firstTargetPosition], l => Assert.Equal(Ignore, l));
        Assert.Equal([.. completion, 1], example.Labels[firstTargetPosition..^1]);
        Assert.Equal(Ignore, example.Labels[^1]);
    }

    [Fact]
    public void Parse_Messages_OnlyAssistantTurnsCarryLoss()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        string line = """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}""";

        TokenizedExample example = Assert.Single(JsonlDataset.Parse([line], "mem", tokenizer).Examples);

        int[] targets = example.Labels.Where(l => l != Ignore).ToArray();
        Assert.Equal([.. tokenizer.Encode("Hello"), 1, .. tokenizer.Encode("Ciao"), 1], targets);
        string rendered = tokenizer.Decode(example.InputIds);
        Assert.Equal("<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n<|user|>\nBye\n<|assistant|>\nCiao\n", rendered);
    }

    [Fact]
    public void Parse_InputIds_TakenAsTheyAreWithShiftedLabels()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        TokenizedExample example = Assert.Single(JsonlDataset.Parse(["""{"input_ids": [5, 6, 7, 8]}"""], "mem", tokenizer).Examples);

        Assert.Equal(new[] { 5, 6, 7, 8 }, example.InputIds);
        Assert.Equal(new[] { 6, 7, 8, Ignore }, example.Labels);
    }

    [Fact]
    public void Parse_LongText_IsTruncatedToMaxLength()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        var options = new DatasetOptions { MaxLength = 8 };

        TokenizedExample example = Assert.Single(
            JsonlDataset.Parse(["""{"text": "abcdefghijklmnop"}"""], "mem", tokenizer, options).Examples);

        Assert.Equal([0, .. tokenizer.Encode("abcdefg")], example.InputIds);
        Assert.Equal([.. tokenizer.Encode("abcdefg"), Ignore], example.Labels);
    }

    [Fact]
    public void Parse_PromptLongerThanMaxLength_DropsTheRecordAndCountsIt()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        var options = new DatasetOptions { MaxLength = 4 };

        JsonlDataset dataset = JsonlDataset.Parse(
            ["""{"prompt": "a long prompt", "completion": "x"}""", """{"text": "ok"}"""], "mem", tokenizer, options);

        Assert.Single(dataset.Examples);
        Assert.Equal(2, dataset.RecordCount);
        Assert.Equal(1, dataset.RecordsWithoutTargets);
    }

    [Fact]
    public void Parse_Pack_CutsTheConcatenationIntoFullBlocksKeepingPromptMasks()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        string[] lines =
        [
            """{"text": "first document"}""",
            """{"prompt": "question", "completion": " answer"}""",
            """{"text": "third"}""",
        ];
        JsonlDataset unpacked = JsonlDataset.Parse(lines, "mem", tokenizer);
        int[] stream = unpacked.Examples.SelectMany(e => e.InputIds).ToArray();

        JsonlDataset packed = JsonlDataset.Parse(lines, "mem", tokenizer, new DatasetOptions { MaxLength = 10, Pack = true });

        Assert.Equal((stream.Length + 9) / 10, packed.Examples.Count);
        Assert.All(packed.Examples.SkipLast(1), e => Assert.Equal(10, e.InputIds.Length));
        Assert.Equal(stream, packed.Examples.SelectMany(e => e.InputIds).ToArray());
        Assert.All(packed.Examples, e => Assert.Equal(Ignore, e.Labels[^1]));
        // Inside each block the labels are the next token wherever that token was a target before packing.
        int[] targetsBefore = unpacked.Examples.SelectMany(e => e.Labels).Where(l => l != Ignore).ToArray();
        int[] targetsAfter = packed.Examples.SelectMany(e => e.Labels).Where(l => l != Ignore).ToArray();
        // Only a target that starts a block loses its loss (nothing inside that block predicts it).
        Assert.InRange(targetsBefore.Length - targetsAfter.Length, 0, packed.Examples.Count - 1);
        int questionStart = Array.IndexOf(stream, 0, 1); // the second record's BOS
        for (int p = questionStart; p < questionStart + tokenizer.Encode("question").Length; p++)
        {
            Assert.Equal(Ignore, packed.Examples[p / 10].Labels[p % 10]);
        }
    }

    [Fact]
    public void Load_MalformedLineUnderStop_ThrowsWithFileAndLine()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        string path = folder.WriteLines("train.jsonl", """{"text": "fine"}""", "", """{"text": "oops" """, """{"text": "fine too"}""");

        var ex = Assert.Throws<DatasetFormatException>(() => JsonlDataset.Load(path, tokenizer));

        // file:line:column in the file's terms, without the parser's own position suffix.
        Assert.StartsWith($"{path}:3:{ex.Line.Column}: not valid JSON", ex.Message);
        Assert.InRange(ex.Line.Column ?? 0, 1, 17);
        Assert.DoesNotContain("LineNumber", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("BytePositionInLine", ex.Message, StringComparison.Ordinal);
        Assert.Equal(3, ex.Line.LineNumber);
        Assert.Equal(path, ex.Line.FilePath);
    }

    [Fact]
    public void Load_MalformedLinesUnderSkip_ReportsEachAndKeepsTheRest()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        string path = folder.WriteLines("train.jsonl",
            """{"text": "fine"}""",
            """[1, 2]""",
            """{"prompt": "no completion"}""",
            """{"text": "fine too"}""",
            """{"messages": [{"role": "robot", "content": "beep"}]}""");

        JsonlDataset dataset = JsonlDataset.Load(path, tokenizer, new DatasetOptions { MalformedLines = MalformedLinePolicy.Skip });

        Assert.Equal(2, dataset.Examples.Count);
        Assert.Equal(new[] { 2, 3, 5 }, dataset.SkippedLines.Select(l => l.LineNumber));
        Assert.All(dataset.SkippedLines, l => Assert.StartsWith($"{path}:{l.LineNumber}: ", l.ToString()));
        Assert.Contains("robot", dataset.SkippedLines[2].Reason);
    }

    [Theory]
    [InlineData("""{"title": "x"}""", "no \"text\"")]
    [InlineData("""{"text": "x", "prompt": "y", "completion": "z"}""", "more than one format")]
    [InlineData("""{"text": 42}""", "\"text\" must be a string")]
    [InlineData("""{"completion": "x"}""", "without \"prompt\"")]
    [InlineData("""{"messages": []}""", "non-empty array")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi"}]}""", "no assistant turn")]
    [InlineData("""{"messages": [{"role": "user"}]}""", "messages[0]")]
    [InlineData("""{"input_ids": [1, 99999]}""", "input_ids[1] = 99999")]
    [InlineData("""{"input_ids": [1, 2.5]}""", "input_ids[1] = 2.5")]
    [InlineData("""{"input_ids": [1]}""", "at least 2")]
    [InlineData("""{"input_ids": "1 2"}""", "must be an array")]
    public void Parse_MalformedRecord_NamesTheProblem(string line, string expected)
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        var ex = Assert.Throws<DatasetFormatException>(() => JsonlDataset.Parse(["""{"text": "ok"}""", line], "data.jsonl", tokenizer));

        Assert.StartsWith("data.jsonl:2: ", ex.Message);
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void Load_InvalidUtf8Line_IsReportedWithItsLineNumber()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        string path = folder.File("bytes.jsonl");
        // A BOM, CRLF line ends, then a line holding a lone 0xFF byte inside the JSON string.
        byte[] content = [0xEF, 0xBB, 0xBF, .. "{\"text\": \"ok\"}\r\n"u8, .. "{\"text\": \"a"u8, 0xFF, .. "b\"}\r\n"u8, .. "{\"text\": \"fine\"}"u8];
        File.WriteAllBytes(path, content);

        var stop = Assert.Throws<DatasetFormatException>(() => JsonlDataset.Load(path, tokenizer));
        JsonlDataset skipped = JsonlDataset.Load(path, tokenizer, new DatasetOptions { MalformedLines = MalformedLinePolicy.Skip });

        Assert.StartsWith($"{path}:2: not valid UTF-8", stop.Message);
        Assert.Equal(2, skipped.Examples.Count);
        Assert.Equal([0, .. tokenizer.Encode("ok"), 1], skipped.Examples[0].InputIds);
        Assert.Equal([0, .. tokenizer.Encode("fine"), 1], skipped.Examples[1].InputIds);
    }

    [Fact]
    public void Load_MissingFile_ThrowsFileNotFound()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        Assert.Throws<FileNotFoundException>(() => JsonlDataset.Load(folder.File("absent.jsonl"), tokenizer));
    }

    [Fact]
    public void DatasetOptions_MaxLengthBelowTwo_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new DatasetOptions { MaxLength = 1 });
    }
}
