using System.Text.Json;
using NativeTokenizer = Tokenizers.DotNet.Tokenizer;
using NativeTokenizerException = Tokenizers.DotNet.TokenizerException;

namespace Federated.Training.Tokenization;

/// <summary>A Hugging Face <c>tokenizer.json</c> run by the Rust tokenizers library (Tokenizers.DotNet).</summary>
/// <remarks>
/// Special-token ids come from <c>tokenizer_config.json</c> (bos_token, eos_token, pad_token) when present, else from
/// the conventional names among <c>added_tokens</c>. Like Hugging Face, text that spells a special token (for
/// example "&lt;/s&gt;") is encoded as that special token.
/// </remarks>
public sealed class HuggingFaceTokenizer : ITextTokenizer, IDisposable
{
    public const string TokenizerFileName = "tokenizer.json";
    public const string ConfigFileName = "tokenizer_config.json";

    // Files above this are not tokenizers (Llama 3's tokenizer.json is about 9 MB).
    private const long MaxFileBytes = 256L << 20;

    private static readonly string[] s_bosNames = ["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
    private static readonly string[] s_eosNames = ["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>"];
    private static readonly string[] s_padNames = ["<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"];

    private readonly NativeTokenizer _native;
    private readonly uint[] _addedPrefix;
    private readonly uint[] _addedSuffix;

    private HuggingFaceTokenizer(NativeTokenizer native, string path, int vocabSize, int? bos, int eos, int pad,
        uint[] addedPrefix, uint[] addedSuffix)
    {
        _native = native;
        TokenizerPath = path;
        VocabSize = vocabSize;
        BosId = bos;
        EosId = eos;
        PadId = pad;
        _addedPrefix = addedPrefix;
        _addedSuffix = addedSuffix;
    }

    /// <summary>The tokenizer.json this instance was loaded from.</summary>
    public string TokenizerPath { get; }

    public int VocabSize { get; }

    public int? BosId { get; }

    public int EosId { get; }

    public int PadId { get; }

    /// <summary>Loads a tokenizer from a model folder (holding tokenizer.json) or from a tokenizer.json path.</summary>
    /// <exception cref="TokenizerLoadException">The file is missing, is not a tokenizer, or names unknown special tokens.</exception>
    public static HuggingFaceTokenizer Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string tokenizerPath = Directory.Exists(path) ? Path.Combine(path, TokenizerFileName) : path;
        string configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerPath)) ?? ".", ConfigFileName);
        if (!File.Exists(tokenizerPath))
        {
            throw new TokenizerLoadException($"tokenizer not found: {tokenizerPath}");
        }

        TokenizerVocabulary vocabulary = ReadVocabulary(tokenizerPath);
        JsonElement? config = File.Exists(configPath) ? ReadJson(configPath).RootElement.Clone() : null;

        int? bos = ResolveSpecial(config, "bos_token", s_bosNames, vocabulary, configPath);
        int? eos = ResolveSpecial(config, "eos_token", s_eosNames, vocabulary, configPath)
            ?? throw new TokenizerLoadException(
                $"{tokenizerPath}: no end-of-sequence token (set eos_token in {ConfigFileName} or add one of {string.Join(" ", s_eosNames)})");
        int pad = ResolveSpecial(config, "pad_token", s_padNames, vocabulary, configPath) ?? eos.Value;

        NativeTokenizer native;
        try
        {
            native = new NativeTokenizer(tokenizerPath);
        }
        catch (NativeTokenizerException ex)
        {
            throw new TokenizerLoadException($"{tokenizerPath}: not a usable tokenizer: {ex.Message}", ex);
        }
        catch (DllNotFoundException ex)
        {
            throw new TokenizerLoadException(
                $"the native tokenizers runtime (Tokenizers.DotNet.runtime) is missing for this platform: {ex.Message}", ex);
        }

        try
        {
            (uint[] prefix, uint[] suffix) = ProbeAddedSpecialTokens(native);
            return new HuggingFaceTokenizer(native, tokenizerPath, vocabulary.Size, bos, eos.Value, pad, prefix, suffix);
        }
        catch
        {
            native.Dispose();
            throw;
        }
    }

    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        uint[] ids = _native.Encode(text);
        int start = StartsWith(ids, _addedPrefix) ? _addedPrefix.Length : 0;
        int end = ids.Length - start >= _addedSuffix.Length && EndsWith(ids, _addedSuffix)
            ? ids.Length - _addedSuffix.Length
            : ids.Length;
        var result = new int[end - start];
        for (int i = 0; i < result.Length; i++)
        {
            result[i] = checked((int)ids[start + i]);
        }
        return result;
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var native = new uint[ids.Length];
        for (int i = 0; i < ids.Length; i++)
        {
            // The native decoder silently returns "" for unknown ids; an out-of-range id is a caller bug.
            ArgumentOutOfRangeException.ThrowIfNegative(ids[i], nameof(ids));
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(ids[i], VocabSize, nameof(ids));
            native[i] = (uint)ids[i];
        }
        return _native.Decode(native);
    }

    public void Dispose() => _native.Dispose();

    // Tokenizers.DotNet always encodes with add_special_tokens=true, so a post-processor (Llama's TemplateProcessing
    // adds <s>) may wrap every encoding. Encoding "" yields exactly the added tokens; encoding "a" shows which of
    // them come before the text and which after, so Encode can strip them and leave BOS/EOS to the data pipeline.
    private static (uint[] Prefix, uint[] Suffix) ProbeAddedSpecialTokens(NativeTokenizer native)
    {
        uint[] added = native.Encode(string.Empty);
        if (added.Length == 0)
        {
            return ([], []);
        }
        uint[] probe = native.Encode("a");
        for (int k = added.Length; k >= 0; k--)
        {
            uint[] prefix = added[..k];
            uint[] suffix = added[k..];
            if (probe.Length > added.Length && StartsWith(probe, prefix) && EndsWith(probe, suffix))
            {
                return (prefix, suffix);
            }
        }
        throw new TokenizerLoadException("the tokenizer's post-processor adds tokens in a way this pipeline cannot strip");
    }

    private static bool StartsWith(uint[] ids, uint[] prefix) => ids.AsSpan().StartsWith(prefix);

    private static bool EndsWith(uint[] ids, uint[] suffix) => ids.AsSpan().EndsWith(suffix);

    private static int? ResolveSpecial(JsonElement? config, string key, string[] conventionalNames,
        TokenizerVocabulary vocabulary, string configPath)
    {
        if (config is { ValueKind: JsonValueKind.Object } root && root.TryGetProperty(key, out JsonElement value))
        {
            // tokenizer_config.json writes a token either as its string or as an AddedToken object with "content".
            string? name = value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Object when value.TryGetProperty("content", out JsonElement c) && c.ValueKind == JsonValueKind.String
                    => c.GetString(),
                JsonValueKind.Null => null,
                _ => throw new TokenizerLoadException($"{configPath}: {key} must be a string, an object with content, or null"),
            };
            if (name is null)
            {
                return null;
            }
            return vocabulary.TokenToId.TryGetValue(name, out int id)
                ? id
                : throw new TokenizerLoadException($"{configPath}: {key} '{name}' is not in the tokenizer's vocabulary");
        }
        foreach (string name in conventionalNames)
        {
            if (vocabulary.SpecialTokenToId.TryGetValue(name, out int id))
            {
                return id;
            }
        }
        return null;
    }

    private static JsonDocument ReadJson(string path)
    {
        try
        {
            var info = new FileInfo(path);
            if (info.Length > MaxFileBytes)
            {
                throw new TokenizerLoadException($"{path}: {info.Length} bytes is larger than the {MaxFileBytes} allowed");
            }
            using FileStream stream = File.OpenRead(path);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException ex)
        {
            throw new TokenizerLoadException($"{path}: not valid JSON: {ex.Message}", ex);
        }
        catch (IOException ex)
        {
            throw new TokenizerLoadException($"{path}: cannot be read: {ex.Message}", ex);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new TokenizerLoadException($"{path}: cannot be read: {ex.Message}", ex);
        }
    }

    private static TokenizerVocabulary ReadVocabulary(string tokenizerPath)
    {
        using JsonDocument document = ReadJson(tokenizerPath);
        JsonElement root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object
            || !root.TryGetProperty("model", out JsonElement model) || model.ValueKind != JsonValueKind.Object
            || !model.TryGetProperty("vocab", out JsonElement vocab))
        {
            throw new TokenizerLoadException($"{tokenizerPath}: not a Hugging Face tokenizer.json (no model.vocab)");
        }

        var tokenToId = new Dictionary<string, int>(StringComparer.Ordinal);
        var specialToId = new Dictionary<string, int>(StringComparer.Ordinal);
        int maxId = -1;
        if (vocab.ValueKind == JsonValueKind.Object)
        {
            // BPE, WordPiece and WordLevel: {"token": id}.
            foreach (JsonProperty entry in vocab.EnumerateObject())
            {
                int id = ReadId(entry.Value, tokenizerPath);
                tokenToId[entry.Name] = id;
                maxId = Math.Max(maxId, id);
            }
        }
        else if (vocab.ValueKind == JsonValueKind.Array)
        {
            // Unigram: [[piece, score], ...], the id being the index.
            int index = 0;
            foreach (JsonElement entry in vocab.EnumerateArray())
            {
                if (entry.ValueKind == JsonValueKind.Array && entry.GetArrayLength() > 0
                    && entry[0].ValueKind == JsonValueKind.String)
                {
                    tokenToId[entry[0].GetString()!] = index;
                }
                maxId = index++;
            }
        }
        else
        {
            throw new TokenizerLoadException($"{tokenizerPath}: model.vocab must be an object or an array");
        }

        if (root.TryGetProperty("added_tokens", out JsonElement added) && added.ValueKind == JsonValueKind.Array)
        {
            foreach (JsonElement token in added.EnumerateArray())
            {
                if (token.ValueKind != JsonValueKind.Object
                    || !token.TryGetProperty("id", out JsonElement idElement)
                    || !token.TryGetProperty("content", out JsonElement content) || content.ValueKind != JsonValueKind.String)
                {
                    throw new TokenizerLoadException($"{tokenizerPath}: each added_tokens entry needs an id and a content");
                }
                int id = ReadId(idElement, tokenizerPath);
                string name = content.GetString()!;
                tokenToId[name] = id;
                if (token.TryGetProperty("special", out JsonElement special) && special.ValueKind == JsonValueKind.True)
                {
                    specialToId[name] = id;
                }
                maxId = Math.Max(maxId, id);
            }
        }

        if (maxId < 0)
        {
            throw new TokenizerLoadException($"{tokenizerPath}: the vocabulary is empty");
        }
        return new TokenizerVocabulary(maxId + 1, tokenToId, specialToId);
    }

    private static int ReadId(JsonElement value, string path)
    {
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int id) || id < 0)
        {
            throw new TokenizerLoadException($"{path}: token id {value.GetRawText()} is not an integer in [0, {int.MaxValue}]");
        }
        return id;
    }

    private sealed record TokenizerVocabulary(int Size, Dictionary<string, int> TokenToId, Dictionary<string, int> SpecialTokenToId);
}
