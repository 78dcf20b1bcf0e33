using Federated.EdgeClient.Transport;

namespace Federated.EdgeClient.Tests;

public sealed class ReconnectBackoffTests
{
    [Fact]
    public void Next_SuccessiveCalls_StayWithinDoublingEqualJitterBoundsAndCap()
    {
        var backoff = new ReconnectBackoff(TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1));
        double[] ceilings = [100, 200, 400, 800, 1000, 1000, 1000];

        foreach (double ceiling in ceilings)
        {
            double delay = backoff.Next().TotalMilliseconds;
            Assert.InRange(delay, Math.Floor(ceiling / 2), ceiling + 1);
        }
        Assert.Equal(ceilings.Length, backoff.Attempt);
    }

    [Fact]
    public void Next_ManyDraws_AreJittered()
    {
        var delays = new HashSet<TimeSpan>();
        for (int i = 0; i < 50; i++)
        {
            var backoff = new ReconnectBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(30));
            delays.Add(backoff.Next());
        }
        Assert.True(delays.Count > 10, $"only {delays.Count} distinct delays in 50 draws");
    }

    [Fact]
    public void Reset_AfterGrowth_StartsOver()
    {
        var backoff = new ReconnectBackoff(TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(10));
        for (int i = 0; i < 6; i++)
        {
            backoff.Next();
        }
        backoff.Reset();
        Assert.InRange(backoff.Next().TotalMilliseconds, 50, 101);
    }

    [Fact]
    public void Constructor_MaximumBelowInitial_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReconnectBackoff(TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReconnectBackoff(TimeSpan.Zero, TimeSpan.FromSeconds(1)));
    }
}
