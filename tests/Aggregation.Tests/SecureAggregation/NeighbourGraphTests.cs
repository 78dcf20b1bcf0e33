using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

public sealed class NeighbourGraphTests
{
    [Fact]
    public void NeighboursOf_HararyGraph_IsRegularSymmetricAndSeeded()
    {
        var p = SecAggRound.Create(n: 40, d: 8, bits: 32, degree: 8, threshold: 5);
        var graph = new NeighbourGraph(p);
        foreach (int u in p.ClientIds)
        {
            var list = graph.NeighboursOf(u);
            Assert.Equal(8, list.Distinct().Count());
            Assert.DoesNotContain(u, list);
            Assert.All(list, v => Assert.True(graph.AreNeighbours(v, u)));
        }
        var same = new NeighbourGraph(SecAggRound.Create(n: 40, d: 8, bits: 32, degree: 8, threshold: 5));
        Assert.All(p.ClientIds, u => Assert.Equal(graph.NeighboursOf(u), same.NeighboursOf(u)));
        var other = new NeighbourGraph(SecAggRound.Create(n: 40, d: 8, bits: 32, degree: 8, threshold: 5, seed: 9));
        Assert.Contains(p.ClientIds, u => !graph.NeighboursOf(u).SequenceEqual(other.NeighboursOf(u)));
    }

    [Fact]
    public void NeighboursOf_CompleteGraph_IsEveryoneElse()
    {
        var p = SecAggRound.Create(n: 5, d: 8, bits: 32, degree: 4, threshold: 3);
        var graph = new NeighbourGraph(p);
        Assert.Equal(p.ClientIds.Where(i => i != p.ClientIds[2]), graph.NeighboursOf(p.ClientIds[2]));
    }

    [Fact]
    public void BinomialTails_KnownValues_Match()
    {
        // P[Bin(4, 1/2) >= 3] = 5/16, P[Bin(4, 1/2) < 2] = 5/16, P[Bin(10, 0.1) >= 1] = 1 - 0.9^10.
        Assert.Equal(5.0 / 16, Math.Exp(SecAggParameters.LogUpperTail(4, 0.5, 3)), 12);
        Assert.Equal(5.0 / 16, Math.Exp(SecAggParameters.LogLowerTail(4, 0.5, 2)), 12);
        Assert.Equal(1 - Math.Pow(0.9, 10), Math.Exp(SecAggParameters.LogUpperTail(10, 0.1, 1)), 12);
    }

    [Theory]
    [InlineData(1000, 0.33, 0.05)]
    [InlineData(100, 0.10, 0.05)]
    [InlineData(10000, 0.05, 0.05)]
    public void DeriveGraphParameters_LargeN_MeetsBothTailBounds(int n, double dropout, double corrupt)
    {
        var (k, t) = SecAggParameters.DeriveGraphParameters(n, dropout, corrupt);
        Assert.InRange(t, 1, k + 1);
        Assert.True(k == n - 1 || k % 2 == 0);
        double log2n = Math.Log2(n);
        if (k < n - 1)
        {
            Assert.True(SecAggParameters.LogUpperTail(k, corrupt, t) <= -(40 + log2n) * Math.Log(2));
            Assert.True(SecAggParameters.LogLowerTail(k + 1, 1 - dropout, t) <= -(20 + log2n) * Math.Log(2));
            // The smallest secure t: one less would let the corrupt neighbours hold t shares too often.
            Assert.True(SecAggParameters.LogUpperTail(k, corrupt, t - 1) > -(40 + log2n) * Math.Log(2));
        }
        _ = SecAggParameters.Create("r", 0, Enumerable.Range(1, n), 4, 32, k, t, new byte[32]);
    }

    [Theory]
    [InlineData(100, 0.15)]
    [InlineData(1000, 0.10)]
    [InlineData(1000, 0.20)]
    public void DeriveGraphParameters_NeighbourhoodMajority_ThresholdAboveHalfOfKPlusOneAndStillRecoverable(int n, double dropout)
    {
        var (k, t) = SecAggParameters.DeriveGraphParameters(n, dropout, 0.05, neighbourhoodMajority: true);
        var (plainK, _) = SecAggParameters.DeriveGraphParameters(n, dropout, 0.05);

        Assert.True(k < n - 1, $"k = {k} is the complete graph");
        Assert.True(2 * t > k + 1, $"t = {t} is not above half of k + 1 = {k + 1}");
        Assert.Equal((k + 1) / 2 + 1, t);
        // That many holders survive the dropout bound, union-bounded over the n clients; the majority costs a larger k.
        Assert.True(SecAggParameters.LogLowerTail(k + 1, 1 - dropout, t) <= -(20 + Math.Log2(n)) * Math.Log(2));
        Assert.True(k >= plainK);
    }

    [Fact]
    public void DeriveGraphParameters_NeighbourhoodMajorityBeyondTheDropoutBound_FallsBackToTheCompleteGraph()
    {
        // At n = 100, a third dropping out leaves too few holders of a majority on any k < 99.
        Assert.Equal(99, SecAggParameters.DeriveGraphParameters(100, 0.33, 0.05, neighbourhoodMajority: true).Degree);
    }

    [Fact]
    public void DeriveGraphParameters_SmallN_IsCompleteGraph()
    {
        var (k, t) = SecAggParameters.DeriveGraphParameters(10, 0.2, 0.05);
        Assert.Equal(9, k);
        Assert.Equal(8, t);
    }

    [Fact]
    public void Create_BadValues_AreRefusedWithTheirRange()
    {
        byte[] seed = new byte[32];
        Assert.Throws<ArgumentOutOfRangeException>(() => SecAggParameters.Create("r", 0, [1], 4, 32, 1, 1, seed));
        Assert.Throws<ArgumentOutOfRangeException>(() => SecAggParameters.Create("r", 0, [0, 1], 4, 32, 1, 1, seed));
        Assert.Throws<ArgumentException>(() => SecAggParameters.Create("r", 0, [2, 2, 3], 4, 32, 2, 1, seed));
        Assert.Throws<ArgumentOutOfRangeException>(() => SecAggParameters.Create("r", 0, [1, 2, 3, 4, 5], 4, 32, 3, 2, seed));
        Assert.Throws<ArgumentOutOfRangeException>(() => SecAggParameters.Create("r", 0, [1, 2, 3], 4, 32, 2, 4, seed));
        Assert.Throws<ArgumentOutOfRangeException>(() => SecAggParameters.Create("r", 0, [1, 2, 3], 4, 12, 2, 2, seed));
        Assert.Throws<ArgumentException>(() => SecAggParameters.Create("r", 0, [1, 2, 3], 4, 32, 2, 2, new byte[31]));
    }
}
