using System.Text;
using System.Text.Json;
using Federated.Training.Tests.Data;
using Federated.Training.Tokenization;

namespace Federated.Training.Tests.Tokenization;

public sealed class ByteLevelTokenizerWriterTests
{
    private static readonly string[] s_corpus =
    [
        "the quick brown fox jumps over the lazy dog",
        "the lazy dog sleeps while the quick fox runs",
        "a fox and a dog are the best of friends",
    ];

    [Fact]
    public void BuildByteToUnicode_MatchesGpt2Table()
    {
        char[] map = ByteLevelTokenizerWriter.BuildByteToUnicode();

        // Known entries of GPT-2's bytes_to_unicode: printable bytes map to themselves, space is 'Ġ', newline 'Ċ'.
        Assert.Equal('A', map['A']);
        Assert.Equal('Ġ', map[' ']);
        Assert.Equal('Ċ', map['\n']);
        Assert.Equal('\u0100', map[0]);
        Assert.Equal(256, map.Distinct().Count());
    }

    [Fact]
    public void Write_WithCorpus_LearnsMergesThatShortenEncodingsAndRoundTrip()
    {
        using var folder = new ScratchFolder();
        int vocabSize = ByteLevelTokenizerWriter.Write(folder.Path, s_corpus, mergeCount: 40);
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(folder.Path);

        string text = "the quick fox and the lazy dog";
        int[] ids = tokenizer.Encode(text);

        Assert.Equal(vocabSize, tokenizer.VocabSize);
        Assert.InRange(vocabSize, ByteLevelTokenizerWriter.BaseVocabSize + 1, ByteLevelTokenizerWriter.BaseVocabSize + 40);
        Assert.True(ids.Length < Encoding.UTF8.GetByteCount(text), $"{ids.Length} ids for {text.Length} bytes");
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Write_SameCorpusTwice_WritesIdenticalFiles()
    {
        using var first = new ScratchFolder();
        using var second = new ScratchFolder();

        ByteLevelTokenizerWriter.Write(first.Path, s_corpus, mergeCount: 25);
        ByteLevelTokenizerWriter.Write(second.Path, s_corpus, mergeCount: 25);

        Assert.Equal(
            File.ReadAllText(first.File(HuggingFaceTokenizer.TokenizerFileName)),
            File.ReadAllText(second.File(HuggingFaceTokenizer.TokenizerFileName)));
    }

    [Fact]
    public void Write_Files_AreHuggingFaceShaped()
    {
        using var folder = new ScratchFolder();
        ByteLevelTokenizerWriter.Write(folder.Path, s_corpus, mergeCount: 5);

        using var tokenizer = JsonDocument.Parse(File.ReadAllText(folder.File(HuggingFaceTokenizer.TokenizerFileName)));
        using var config = JsonDocument.Parse(File.ReadAllText(folder.File(HuggingFaceTokenizer.ConfigFileName)));
        JsonElement model = tokenizer.RootElement.GetProperty("model");

        Assert.Equal("BPE", model.GetProperty("type").GetString());
        Assert.Equal(5, model.GetProperty("merges").GetArrayLength());
        Assert.Equal(3, tokenizer.RootElement.GetProperty("added_tokens").GetArrayLength());
        Assert.Equal("</s>", config.RootElement.GetProperty("eos_token").GetString());
    }

    [Fact]
    public void Write_NegativeMergeCount_Throws()
    {
        using var folder = new ScratchFolder();

        Assert.Throws<ArgumentOutOfRangeException>(() => ByteLevelTokenizerWriter.Write(folder.Path, s_corpus, -1));
    }
}
