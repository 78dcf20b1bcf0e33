namespace Federated.Training.Tokenization;

/// <summary>A text tokenizer as the data pipeline needs it: text to ids without special tokens, ids back to text.</summary>
public interface ITextTokenizer
{
    /// <summary>Number of ids the model's embedding must cover (largest id + 1).</summary>
    int VocabSize { get; }

    /// <summary>Id of the beginning-of-sequence token, or null where the tokenizer has none (Qwen2).</summary>
    int? BosId { get; }

    /// <summary>Id of the end-of-sequence token; every causal-LM tokenizer this project accepts has one.</summary>
    int EosId { get; }

    /// <summary>Id used for padding; the tokenizer's pad token, else <see cref="EosId"/> (positions are masked anyway).</summary>
    int PadId { get; }

    /// <summary>Encodes text into ids, without the special tokens a post-processor would add (the caller adds BOS/EOS).</summary>
    int[] Encode(string text);

    /// <summary>Decodes ids to text, skipping special tokens.</summary>
    string Decode(ReadOnlySpan<int> ids);
}
