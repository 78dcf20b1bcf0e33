using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Federated.Training.Tokenization;

/// <summary>Writes a small but real Hugging Face byte-level BPE tokenizer (GPT-2 style) with &lt;s&gt;, &lt;/s&gt;, &lt;pad&gt;.</summary>
/// <remarks>
/// Ids 0..2 are the special tokens, ids 3..258 the 256 bytes (so any UTF-8 text round-trips), then one id per BPE
/// merge learned from an optional corpus. A TemplateProcessing post-processor prepends &lt;s&gt; like Llama's, so
/// Hugging Face transformers and PEFT load the folder as they would a real checkpoint's.
/// </remarks>
public static partial class ByteLevelTokenizerWriter
{
    public const string BosToken = "<s>";
    public const string EosToken = "</s>";
    public const string PadToken = "<pad>";
    public const int BosId = 0;
    public const int EosId = 1;
    public const int PadId = 2;
    public const int FirstByteId = 3;

    /// <summary>Vocabulary size with no merges: three special tokens and 256 bytes.</summary>
    public const int BaseVocabSize = FirstByteId + 256;

    /// <summary>Upper bound on learned merges; a test or simulation tokenizer needs few.</summary>
    public const int MaxMerges = 32_768;

    private static readonly char[] s_byteToChar = BuildByteToUnicode();

    /// <summary>Writes tokenizer.json and tokenizer_config.json into <paramref name="directory"/> and returns the vocab size.</summary>
    /// <param name="directory">Folder to write into; created when missing.</param>
    /// <param name="corpus">Texts to learn BPE merges from; null or empty gives a pure byte tokenizer.</param>
    /// <param name="mergeCount">How many merges to learn at most (stops early when no pair occurs twice).</param>
    public static int Write(string directory, IEnumerable<string>? corpus = null, int mergeCount = 0)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentOutOfRangeException.ThrowIfNegative(mergeCount);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(mergeCount, MaxMerges);

        var vocab = new JsonObject();
        var idOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            string symbol = s_byteToChar[b].ToString();
            idOf[symbol] = FirstByteId + b;
        }
        List<(string Left, string Right)> merges = corpus is null || mergeCount == 0
            ? []
            : LearnMerges(corpus, mergeCount);
        foreach ((string left, string right) in merges)
        {
            idOf.TryAdd(left + right, FirstByteId + idOf.Count);
        }

        vocab[BosToken] = BosId;
        vocab[EosToken] = EosId;
        vocab[PadToken] = PadId;
        foreach ((string token, int id) in idOf.OrderBy(p => p.Value))
        {
            vocab[token] = id;
        }

        var added = new JsonArray();
        foreach ((int id, string content) in new[] { (BosId, BosToken), (EosId, EosToken), (PadId, PadToken) })
        {
            added.Add(new JsonObject
            {
                ["id"] = id,
                ["content"] = content,
                ["single_word"] = false,
                ["lstrip"] = false,
                ["rstrip"] = false,
                ["normalized"] = false,
                ["special"] = true,
            });
        }

        var byteLevel = new JsonObject
        {
            ["type"] = "ByteLevel",
            ["add_prefix_space"] = false,
            ["trim_offsets"] = true,
            ["use_regex"] = true,
        };
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = byteLevel.DeepClone(),
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(SpecialPiece(BosToken), SequencePiece("A")),
                ["pair"] = new JsonArray(SpecialPiece(BosToken), SequencePiece("A"), SpecialPiece(BosToken), SequencePiece("B")),
                ["special_tokens"] = new JsonObject
                {
                    [BosToken] = new JsonObject
                    {
                        ["id"] = BosToken,
                        ["ids"] = new JsonArray(BosId),
                        ["tokens"] = new JsonArray(BosToken),
                    },
                },
            },
            ["decoder"] = byteLevel.DeepClone(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode?)JsonValue.Create($"{m.Left} {m.Right}")).ToArray()),
            },
        };

        var config = new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["bos_token"] = BosToken,
            ["eos_token"] = EosToken,
            ["pad_token"] = PadToken,
            ["add_bos_token"] = true,
            ["add_eos_token"] = false,
            ["clean_up_tokenization_spaces"] = false,
            ["model_max_length"] = 2048,
        };

        Directory.CreateDirectory(directory);
        var options = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(Path.Combine(directory, HuggingFaceTokenizer.TokenizerFileName), tokenizer.ToJsonString(options), new UTF8Encoding(false));
        File.WriteAllText(Path.Combine(directory, HuggingFaceTokenizer.ConfigFileName), config.ToJsonString(options), new UTF8Encoding(false));
        return FirstByteId + idOf.Count;
    }

    /// <summary>The GPT-2 byte-to-unicode map: printable bytes map to themselves, the others to code points from 256.</summary>
    internal static char[] BuildByteToUnicode()
    {
        // From openai/gpt-2 encoder.py bytes_to_unicode, which Hugging Face's ByteLevel pre-tokenizer reproduces.
        var map = new char[256];
        var printable = new bool[256];
        for (int b = '!'; b <= '~'; b++)
        {
            printable[b] = true;
        }
        for (int b = 0xA1; b <= 0xAC; b++)
        {
            printable[b] = true;
        }
        for (int b = 0xAE; b <= 0xFF; b++)
        {
            printable[b] = true;
        }
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            map[b] = printable[b] ? (char)b : (char)(256 + next++);
        }
        return map;
    }

    // Classic BPE training (Sennrich et al. 2016) over GPT-2 pre-tokenized words: merge the most frequent adjacent pair,
    // ties broken by ordinal order so the same corpus always gives the same tokenizer.
    private static List<(string Left, string Right)> LearnMerges(IEnumerable<string> corpus, int mergeCount)
    {
        var wordCounts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string text in corpus)
        {
            ArgumentNullException.ThrowIfNull(text, nameof(corpus));
            foreach (Match match in Gpt2PreTokenizer().Matches(text))
            {
                var sb = new StringBuilder();
                foreach (byte b in Encoding.UTF8.GetBytes(match.Value))
                {
                    sb.Append(s_byteToChar[b]);
                }
                string word = sb.ToString();
                wordCounts[word] = wordCounts.GetValueOrDefault(word) + 1;
            }
        }

        var words = wordCounts.Select(p => (Symbols: p.Key.Select(c => c.ToString()).ToList(), Count: p.Value)).ToList();
        var merges = new List<(string, string)>();
        while (merges.Count < mergeCount)
        {
            var pairCounts = new Dictionary<(string, string), int>();
            foreach ((List<string> symbols, int count) in words)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    var pair = (symbols[i], symbols[i + 1]);
                    pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + count;
                }
            }
            (string Left, string Right) best = default;
            int bestCount = 1;
            foreach (((string left, string right), int count) in pairCounts)
            {
                if (count > bestCount || (count == bestCount && best.Left is not null && Compare((left, right), best) < 0))
                {
                    best = (left, right);
                    bestCount = count;
                }
            }
            if (best.Left is null)
            {
                break;
            }
            merges.Add(best);
            foreach ((List<string> symbols, _) in words)
            {
                for (int i = 0; i + 1 < symbols.Count; i++)
                {
                    if (symbols[i] == best.Left && symbols[i + 1] == best.Right)
                    {
                        symbols[i] = best.Left + best.Right;
                        symbols.RemoveAt(i + 1);
                    }
                }
            }
        }
        return merges;
    }

    private static int Compare((string Left, string Right) a, (string Left, string Right) b)
    {
        int c = string.CompareOrdinal(a.Left, b.Left);
        return c != 0 ? c : string.CompareOrdinal(a.Right, b.Right);
    }

    private static JsonObject SpecialPiece(string token) =>
        new() { ["SpecialToken"] = new JsonObject { ["id"] = token, ["type_id"] = 0 } };

    private static JsonObject SequencePiece(string id) =>
        new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };

    // GPT-2's pre-tokenization pattern, the one Hugging Face's ByteLevel pre-tokenizer applies with use_regex=true.
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2PreTokenizer();
}
