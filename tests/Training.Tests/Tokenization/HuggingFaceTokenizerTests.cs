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

    [Fact]
    public void Encode_PostProcessorAddingBosAndEos_StripsBoth()
    {
        using var folder = new ScratchFolder();
        // A hand-written WordLevel tokenizer whose TemplateProcessing wraps every sequence as "<s> $A </s>".
        File.WriteAllText(folder.File(HuggingFaceTokenizer.TokenizerFileName), """
            {
              "version": "1.0", "truncation": null, "padding": null,
              "added_tokens": [
                {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
              ],
              "normalizer": null,
              "pre_tokenizer": {"type": "Whitespace"},
              "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {
                  "<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                  "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
                }
              },
              "decoder": null,
              "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4, "a": 5}, "unk_token": "<unk>"}
            }
            """);

        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(folder.Path);

        Assert.Equal(new[] { 3, 4, 3 }, tokenizer.Encode("hello world hello"));
        Assert.Equal(new[] { 0 }, tokenizer.Encode("unknown"));
        Assert.Empty(tokenizer.Encode(""));
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(2, tokenizer.PadId);
        Assert.Equal(6, tokenizer.VocabSize);
    }

    [Fact]
    public void EncodeDecode_Llama2StyleMetaspaceTokenizer_StripsBosAndRoundTrips()
    {
        using var folder = new ScratchFolder();
        // The shape of TinyLlama's and Llama 2's tokenizer.json: SentencePiece-converted BPE with byte fallback, a
        // normalizer that prepends and substitutes '▁', and a TemplateProcessing that prepends <s>.
        File.WriteAllText(folder.File(HuggingFaceTokenizer.TokenizerFileName), """
            {
              "version": "1.0", "truncation": null, "padding": null,
              "added_tokens": [
                {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
              ],
              "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
              ]},
              "pre_tokenizer": null,
              "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
              },
              "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
              ]},
              "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x21>": 3, "▁": 4, "h": 5, "e": 6, "l": 7, "o": 8,
                          "▁h": 9, "ll": 10, "▁he": 11, "▁hell": 12, "▁hello": 13},
                "merges": ["▁ h", "l l", "▁h e", "▁he ll", "▁hell o"]
              }
            }
            """);
        File.WriteAllText(folder.File(HuggingFaceTokenizer.ConfigFileName),
            """{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null, "add_bos_token": true}""");

        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(folder.Path);
        int[] ids = tokenizer.Encode("hello hello!");

        Assert.Equal(new[] { 13, 13, 3 }, ids);
        Assert.Equal("hello hello!", tokenizer.Decode(ids));
        Assert.Equal(1, tokenizer.BosId);
        Assert.Equal(2, tokenizer.EosId);
        Assert.Equal(2, tokenizer.PadId);
    }
}
