namespace Federated.Training.Generation;

/// <summary>How <see cref="TextGenerator"/> continues a prompt: length, greedy or sampled, and the sampler's seed.</summary>
public sealed record GenerationOptions
{
    /// <summary>The largest <see cref="MaxNewTokens"/> accepted.</summary>
    public const int MaxSupportedNewTokens = 1 << 16;

    /// <summary>The largest <see cref="Temperature"/> accepted.</summary>
    public const double MaxTemperature = 100.0;

    /// <summary>Tokens generated at most (1 .. 65536); generation stops earlier at EOS.</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>0: greedy (the most likely token each step); above 0: sampling from softmax(logits / temperature).</summary>
    public double Temperature { get; init; }

    /// <summary>Seed of the sampler's generator: the same seed, prompt and model give the same tokens.</summary>
    public long Seed { get; init; }

    /// <summary>Token ids that end generation (the tokenizer's EOS and any others the model uses); the stop token is kept in the output ids.</summary>
    public IReadOnlyList<int> StopIds { get; init; } = [];

    /// <summary>Throws when a value is outside its allowed range.</summary>
    public void Validate()
    {
        if (MaxNewTokens is < 1 or > MaxSupportedNewTokens)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, $"max new tokens must be in 1..{MaxSupportedNewTokens}");
        }
        if (!(Temperature >= 0 && Temperature <= MaxTemperature))
        {
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, $"temperature must be in [0, {MaxTemperature}]");
        }
        ArgumentNullException.ThrowIfNull(StopIds, nameof(StopIds));
    }
}

/// <summary>Why generation ended.</summary>
public enum GenerationStop
{
    /// <summary>The model produced a stop token (EOS).</summary>
    EndOfSequence,

    /// <summary><see cref="GenerationOptions.MaxNewTokens"/> tokens were generated.</summary>
    MaxNewTokens,

    /// <summary>The sequence reached the model's max_position_embeddings.</summary>
    ContextLength,
}

/// <summary>The prompt and the tokens generated after it (a final stop token included).</summary>
public sealed record GenerationResult(IReadOnlyList<int> PromptIds, IReadOnlyList<int> GeneratedIds, GenerationStop Stop);
