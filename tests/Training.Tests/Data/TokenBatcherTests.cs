using Federated.Training.Data;

namespace Federated.Training.Tests.Data;

public sealed class TokenBatcherTests
{
    private const int Ignore = TokenizedExample.IgnoreIndex;

    private static TokenizedExample Example(params int[] ids) =>
        new(ids, [.. ids.Skip(1), Ignore]);

    [Fact]
    public void Collate_RaggedExamples_PadsRightWithMaskAndIgnoredLabels()
    {
        TokenBatch batch = TokenBatcher.Collate([Example(10, 11, 12), Example(20)], padId: 2);

        Assert.Equal(2, batch.BatchSize);
        Assert.Equal(3, batch.SequenceLength);
        Assert.Equal(new long[] { 10, 11, 12, 20, 2, 2 }, batch.InputIds);
        Assert.Equal(new long[] { 11, 12, Ignore, Ignore, Ignore, Ignore }, batch.Labels);
        Assert.Equal(new long[] { 1, 1, 1, 1, 0, 0 }, batch.AttentionMask);
        Assert.Equal(2, batch.TargetTokens);
    }

    [Fact]
    public void Collate_FixedSequenceLength_PadsToIt()
    {
        TokenBatch batch = TokenBatcher.Collate([Example(5, 6)], padId: 0, sequenceLength: 4);

        Assert.Equal(4, batch.SequenceLength);
        Assert.Equal(new long[] { 1, 1, 0, 0 }, batch.AttentionMask);
        Assert.Throws<ArgumentOutOfRangeException>(() => TokenBatcher.Collate([Example(5, 6, 7)], 0, sequenceLength: 2));
    }

    [Fact]
    public void Batches_InOrder_KeepsFileOrderAndAShortLastBatch()
    {
        TokenizedExample[] examples = Enumerable.Range(0, 5).Select(i => Example(i, i)).ToArray();

        IReadOnlyList<TokenBatch> batches = TokenBatcher.Batches(examples, batchSize: 2, padId: 0);

        Assert.Equal(new[] { 2, 2, 1 }, batches.Select(b => b.BatchSize));
        Assert.Equal(new long[] { 0, 0, 1, 1 }, batches[0].InputIds);
        Assert.Equal(2, TokenBatcher.Batches(examples, 2, 0, dropLast: true).Count);
    }

    [Fact]
    public void Batches_Shuffled_SameSeedSameOrderAndEveryExampleOnce()
    {
        TokenizedExample[] examples = Enumerable.Range(0, 40).Select(i => Example(i, i)).ToArray();

        long[] first = TokenBatcher.Batches(examples, 8, 0, shuffleSeed: 42).SelectMany(b => b.InputIds.Where((_, i) => i % 2 == 0)).ToArray();
        long[] again = TokenBatcher.Batches(examples, 8, 0, shuffleSeed: 42).SelectMany(b => b.InputIds.Where((_, i) => i % 2 == 0)).ToArray();
        long[] other = TokenBatcher.Batches(examples, 8, 0, shuffleSeed: 43).SelectMany(b => b.InputIds.Where((_, i) => i % 2 == 0)).ToArray();

        Assert.Equal(first, again);
        Assert.NotEqual(first, other);
        Assert.NotEqual(Enumerable.Range(0, 40).Select(i => (long)i), first);
        Assert.Equal(Enumerable.Range(0, 40).Select(i => (long)i), first.Order());
    }

    [Fact]
    public void ShuffledOrder_KnownSeed_IsAPermutation()
    {
        int[] order = TokenBatcher.ShuffledOrder(1000, seed: 7);

        Assert.Equal(Enumerable.Range(0, 1000), order.Order());
        Assert.Empty(TokenBatcher.ShuffledOrder(0, 7));
    }

    [Fact]
    public void SplitMix64_ReferenceSeed_MatchesVignasOutputs()
    {
        // Outputs of the reference splitmix64.c seeded with 1234567.
        var random = new SplitMix64(1234567);

        Assert.Equal(6457827717110365317UL, random.Next());
        Assert.Equal(3203168211198807973UL, random.Next());
        Assert.Equal(9817491932198370423UL, random.Next());
    }

    [Fact]
    public void Sampler_AcrossEpochs_VisitsEachExampleOncePerEpochAndReshuffles()
    {
        TokenizedExample[] examples = Enumerable.Range(0, 10).Select(i => Example(i, i)).ToArray();
        var sampler = new TokenBatchSampler(examples, batchSize: 4, padId: 0, seed: 3);

        var epochs = new List<List<long>> { new(), new() };
        while (sampler.Epoch < 2)
        {
            int epoch = sampler.Epoch;
            TokenBatch batch = sampler.Next();
            if (sampler.Epoch != epoch)
            {
                epoch = sampler.Epoch;
                if (epoch >= 2)
                {
                    break;
                }
            }
            epochs[epoch].AddRange(batch.InputIds.Where((_, i) => i % 2 == 0));
        }

        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), epochs[0].Order());
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), epochs[1].Order());
        Assert.NotEqual(epochs[0], epochs[1]);
    }
}
