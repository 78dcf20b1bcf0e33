using Federated.Aggregation.SecureAggregation;

namespace Federated.Aggregation.Tests.SecureAggregation;

public sealed class RingVectorTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(1000)]
    public void AddInPlace_AnyLength_MatchesScalarWrapAround(int length)
    {
        using var random = new DeterministicRandom(length);
        var acc = RandomWords(random, length);
        var x = RandomWords(random, length);
        var expected = acc.Zip(x, (a, b) => unchecked(a + b)).ToArray();
        RingVector.AddInPlace(acc, x);
        Assert.Equal(expected, acc);
        RingVector.SubtractInPlace(acc, x);
        Assert.Equal(expected.Zip(x, (a, b) => unchecked(a - b)), acc);
    }

    [Fact]
    public void Reduce_Bits20_KeepsLowBits()
    {
        uint[] v = [0xFFFFFFFF, 0x00100000, 0x000FFFFF];
        RingVector.Reduce(v, 20);
        Assert.Equal([0x000FFFFFu, 0u, 0x000FFFFFu], v);
        Assert.Equal(0x000FFFFFu, RingVector.ModulusMask(20));
        Assert.Throws<ArgumentOutOfRangeException>(() => RingVector.ModulusMask(15));
        Assert.Throws<ArgumentOutOfRangeException>(() => RingVector.ModulusMask(33));
    }

    [Fact]
    public void AddInPlaceCheckingRange_ValueOutsideRing_IsReported()
    {
        var acc = new uint[100];
        var x = Enumerable.Repeat(5u, 100).ToArray();
        Assert.Equal(0u, RingVector.AddInPlaceCheckingRange(acc, x, RingVector.ModulusMask(16)));
        x[97] = 1u << 16;
        Assert.NotEqual(0u, RingVector.AddInPlaceCheckingRange(acc, x, RingVector.ModulusMask(16)));
        Assert.False(RingVector.AllInRing(x, 16));
        Assert.True(RingVector.AllInRing(x, 17));
    }

    private static uint[] RandomWords(DeterministicRandom random, int length)
    {
        byte[] bytes = new byte[length * 4];
        random.Fill(bytes);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(bytes).ToArray();
    }
}
