using System.Text;
using Federated.Training.Tests.Data;
using Federated.Training.Tokenization;

namespace Federated.Training.Tests.Tokenization;

public sealed class HuggingFaceTokenizerTests
{
    [Fact]
    public void Load_WrittenByteTokenizer_ReadsVocabAndSpecialIds()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        Assert.Equal(ByteLevelTokenizerWriter.BaseVocabSize, tokenizer.VocabSize);
        Assert.Equal(ByteLevelTokenizerWriter.BosId, tokenizer.BosId);
        Assert.Equal(ByteLevelTokenizerWriter.EosId, tokenizer.EosId);
        Assert.Equal(ByteLevelTokenizerWriter.PadId, tokenizer.PadId);
    }

    [Fact]
    public void Encode_AsciiText_GivesOneIdPerByteWithoutTheAddedBos()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        // The written post-processor prepends <s> like Llama's; Encode must strip it and keep only the text's bytes.
        int[] ids = tokenizer.Encode("Hi!");

        Assert.Equal(new[] { 3 + 'H', 3 + 'i', 3 + '!' }, ids);
    }

    [Theory]
    [InlineData("Hello, world!")]
    [InlineData("  leading spaces and\ttabs\nnew lines  ")]
    [InlineData("Grüße, 你好, emoji 🙂 and \u0001 control")]
    [InlineData("")]
    public void EncodeDecode_AnyText_RoundTrips(string text)
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        int[] ids = tokenizer.Encode(text);

        Assert.Equal(Encoding.UTF8.GetByteCount(text), ids.Length);
        Assert.All(ids, id => Assert.InRange(id, ByteLevelTokenizerWriter.FirstByteId, tokenizer.VocabSize - 1));
        Assert.Equal(text, tokenizer.Decode(ids));
    }

    [Fact]
    public void Decode_SpecialTokens_AreSkipped()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();
        int[] ids = [tokenizer.BosId!.Value, .. tokenizer.Encode("abc"), tokenizer.EosId, tokenizer.PadId];

        Assert.Equal("abc", tokenizer.Decode(ids));
    }

    [Fact]
    public void Decode_IdOutsideVocabulary_Throws()
    {
        using var folder = new ScratchFolder();
        using HuggingFaceTokenizer tokenizer = folder.ByteTokenizer();

        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([5, tokenizer.VocabSize]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([-1]));
    }

    [Fact]
    public void Load_WithoutTokenizerConfig_UsesConventionalSpecialTokenNames()
    {
        using var folder = new ScratchFolder();
        ByteLevelTokenizerWriter.Write(folder.Path);
        File.Delete(folder.File(HuggingFaceTokenizer.ConfigFileName));

        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(folder.File(HuggingFaceTokenizer.TokenizerFileName));

        Assert.Equal(0, tokenizer.BosId);
        Assert.Equal(1, tokenizer.EosId);
        Assert.Equal(2, tokenizer.PadId);
    }

    [Fact]
    public void Load_ConfigWithObjectAndNullTokens_FollowsTheConfig()
    {
        using var folder = new ScratchFolder();
        ByteLevelTokenizerWriter.Write(folder.Path);
        File.WriteAllText(folder.File(HuggingFaceTokenizer.ConfigFileName),
            """{"bos_token": null, "eos_token": {"content": "<pad>", "special": true}, "pad_token": null}""");

        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(folder.Path);

        Assert.Null(tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(2, tokenizer.PadId);
    }

    [Fact]
    public void Load_ConfigNamesUnknownToken_ThrowsNamingIt()
    {
        using var folder = new ScratchFolder();
        ByteLevelTokenizerWriter.Write(folder.Path);
        File.WriteAllText(folder.File(HuggingFaceTokenizer.ConfigFileName), """{"eos_token": "<|nope|>"}""");

        var ex = Assert.Throws<TokenizerLoadException>(() => HuggingFaceTokenizer.Load(folder.Path));

        Assert.Contains("<|nope|>", ex.Message);
    }

    [Fact]
    public void Load_MissingFile_ThrowsTokenizerLoadException()
    {
        using var folder = new ScratchFolder();

        var ex = Assert.Throws<TokenizerLoadException>(() => HuggingFaceTokenizer.Load(folder.Path));

        Assert.Contains("not found", ex.Message);
    }

    [Theory]
    [InlineData("this is not json")]
    [InlineData("""{"version": "1.0"}""")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a c"]}, "added_tokens": [{"id": 2, "content": "</s>", "special": true}]}""")]
    public void Load_UnreadableTokenizer_ThrowsTokenizerLoadException(string json)
    {
        using var folder = new ScratchFolder();
        File.WriteAllText(folder.File(HuggingFaceTokenizer.TokenizerFileName), json);

        var ex = Assert.Throws<TokenizerLoadException>(() => HuggingFaceTokenizer.Load(folder.Path));

        Assert.Contains(HuggingFaceTokenizer.TokenizerFileName, ex.Message);
    }
}
