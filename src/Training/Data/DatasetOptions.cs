namespace Federated.Training.Data;

/// <summary>How JSONL records become training sequences: length, padding or packing, special tokens, bad lines.</summary>
public sealed record DatasetOptions
{
    /// <summary>Largest sequence length accepted.</summary>
    public const int MaxSupportedLength = 1 << 20;

    private readonly int _maxLength = 512;

    /// <summary>Sequence length: examples are truncated to it, or packed into blocks of exactly it.</summary>
    public int MaxLength
    {
        get => _maxLength;
        init
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 2, nameof(MaxLength));
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, MaxSupportedLength, nameof(MaxLength));
            _maxLength = value;
        }
    }

    /// <summary>
    /// False (default): one example per record, truncated to <see cref="MaxLength"/>, padded per batch with an attention
    /// mask. True: records are concatenated (each ends with EOS) and cut into blocks of <see cref="MaxLength"/>; the last
    /// shorter block is kept and padded.
    /// </summary>
    public bool Pack { get; init; }

    /// <summary>Whether to stop at a malformed line or skip it.</summary>
    public MalformedLinePolicy MalformedLines { get; init; } = MalformedLinePolicy.Stop;

    /// <summary>Prefix text records with BOS where the tokenizer has one (pre-tokenized records are taken as they are).</summary>
    public bool AddBos { get; init; } = true;

    /// <summary>End text and prompt/completion records with EOS, a target, so the model learns where an answer stops.</summary>
    /// <remarks>Chat turns always end with EOS (see <see cref="ChatTemplate"/>); pre-tokenized records get nothing added.</remarks>
    public bool AddEos { get; init; } = true;
}
