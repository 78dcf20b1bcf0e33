namespace Federated.Training.Data;

/// <summary>Turns tokenized examples into padded <see cref="TokenBatch"/>es, in file order or a seeded shuffle.</summary>
public static class TokenBatcher
{
    /// <summary>Pads examples on the right to <paramref name="sequenceLength"/> (0: the longest example) into one batch.</summary>
    /// <remarks>Padding gets <paramref name="padId"/>, attention mask 0 and label <see cref="TokenizedExample.IgnoreIndex"/>.</remarks>
    public static TokenBatch Collate(IReadOnlyList<TokenizedExample> examples, int padId, int sequenceLength = 0)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfZero(examples.Count, nameof(examples));
        ArgumentOutOfRangeException.ThrowIfNegative(padId);
        ArgumentOutOfRangeException.ThrowIfNegative(sequenceLength);

        int longest = 0;
        foreach (TokenizedExample example in examples)
        {
            ArgumentNullException.ThrowIfNull(example, nameof(examples));
            if (example.InputIds.Length != example.Labels.Length)
            {
                throw new ArgumentException(
                    $"an example has {example.InputIds.Length} input ids but {example.Labels.Length} labels", nameof(examples));
            }
            longest = Math.Max(longest, example.InputIds.Length);
        }
        int length = sequenceLength == 0 ? longest : sequenceLength;
        if (longest > length)
        {
            throw new ArgumentOutOfRangeException(nameof(sequenceLength),
                $"sequence length {sequenceLength} is shorter than the longest example ({longest})");
        }
        ArgumentOutOfRangeException.ThrowIfZero(length, nameof(examples));

        int rows = examples.Count;
        var inputIds = new long[rows * length];
        var labels = new long[rows * length];
        var mask = new long[rows * length];
        Array.Fill(inputIds, padId);
        Array.Fill(labels, TokenizedExample.IgnoreIndex);
        for (int row = 0; row < rows; row++)
        {
            TokenizedExample example = examples[row];
            int offset = row * length;
            for (int i = 0; i < example.InputIds.Length; i++)
            {
                inputIds[offset + i] = example.InputIds[i];
                labels[offset + i] = example.Labels[i];
                mask[offset + i] = 1;
            }
        }
        return new TokenBatch(inputIds, labels, mask, rows, length);
    }

    /// <summary>One pass over the examples in batches of <paramref name="batchSize"/> (the last may be smaller).</summary>
    /// <param name="shuffleSeed">Null keeps file order; a seed gives the same permutation on every machine.</param>
    /// <param name="dropLast">Drop a last batch smaller than <paramref name="batchSize"/>.</param>
    public static IReadOnlyList<TokenBatch> Batches(IReadOnlyList<TokenizedExample> examples, int batchSize, int padId,
        ulong? shuffleSeed = null, bool dropLast = false)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        int[] order = shuffleSeed is ulong seed ? ShuffledOrder(examples.Count, seed) : Enumerable.Range(0, examples.Count).ToArray();
        var batches = new List<TokenBatch>();
        for (int start = 0; start < order.Length; start += batchSize)
        {
            int count = Math.Min(batchSize, order.Length - start);
            if (count < batchSize && dropLast)
            {
                break;
            }
            var rows = new TokenizedExample[count];
            for (int i = 0; i < count; i++)
            {
                rows[i] = examples[order[start + i]];
            }
            batches.Add(Collate(rows, padId));
        }
        return batches;
    }

    /// <summary>A permutation of 0..count-1 by Fisher-Yates driven by SplitMix64, identical across platforms and runtimes.</summary>
    public static int[] ShuffledOrder(int count, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var order = Enumerable.Range(0, count).ToArray();
        var random = new SplitMix64(seed);
        for (int i = count - 1; i > 0; i--)
        {
            int j = (int)random.NextBelow((ulong)i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }
}

/// <summary>Endless batches for step-based training: each epoch reshuffles with a seed derived from the base seed.</summary>
public sealed class TokenBatchSampler
{
    private readonly IReadOnlyList<TokenizedExample> _examples;
    private readonly int _batchSize;
    private readonly int _padId;
    private readonly ulong _seed;
    private int[] _order;
    private int _position;

    public TokenBatchSampler(IReadOnlyList<TokenizedExample> examples, int batchSize, int padId, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentOutOfRangeException.ThrowIfZero(examples.Count, nameof(examples));
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(padId);
        _examples = examples;
        _batchSize = batchSize;
        _padId = padId;
        _seed = seed;
        _order = TokenBatcher.ShuffledOrder(examples.Count, EpochSeed(0));
    }

    /// <summary>Zero-based epoch of the next batch.</summary>
    public int Epoch { get; private set; }

    /// <summary>The next batch; an epoch's last batch may be smaller, then the next epoch starts reshuffled.</summary>
    public TokenBatch Next()
    {
        if (_position >= _order.Length)
        {
            Epoch++;
            _order = TokenBatcher.ShuffledOrder(_examples.Count, EpochSeed(Epoch));
            _position = 0;
        }
        int count = Math.Min(_batchSize, _order.Length - _position);
        var rows = new TokenizedExample[count];
        for (int i = 0; i < count; i++)
        {
            rows[i] = _examples[_order[_position + i]];
        }
        _position += count;
        return TokenBatcher.Collate(rows, _padId);
    }

    // One SplitMix64 step decorrelates consecutive epochs' seeds.
    private ulong EpochSeed(int epoch) => new SplitMix64(_seed ^ ((ulong)epoch * 0x9E3779B97F4A7C15UL)).Next();
}

/// <summary>SplitMix64 (Steele, Lea and Flood 2014; Vigna's reference splitmix64.c): a tiny seeded generator for shuffling.</summary>
internal struct SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        // Constants from https://prng.di.unimi.it/splitmix64.c
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, bound) without modulo bias (Lemire 2019, "Fast random integer generation in an interval").</summary>
    public ulong NextBelow(ulong bound)
    {
        ArgumentOutOfRangeException.ThrowIfZero(bound);
        UInt128 product = (UInt128)Next() * bound;
        ulong low = (ulong)product;
        if (low < bound)
        {
            ulong threshold = (0UL - bound) % bound;
            while (low < threshold)
            {
                product = (UInt128)Next() * bound;
                low = (ulong)product;
            }
        }
        return (ulong)(product >> 64);
    }
}
