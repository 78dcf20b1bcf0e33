using Federated.Coordinator.State;
using Microsoft.Extensions.Time.Testing;

namespace Federated.Coordinator.Tests.Hosting;

/// <summary>Who serves: the sole (SQLite) coordinator always; a shared one only while its own clock says its lease runs.</summary>
public sealed class LeadershipTests
{
    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void Sole_Always_ServingAndLeading()
    {
        Leadership sole = Leadership.Sole(_time);
        _time.Advance(TimeSpan.FromDays(1));

        Assert.True(sole.Serving);
        Assert.False(sole.IsShared);
        Assert.True(sole.WhenLeading(CancellationToken.None).IsCompletedSuccessfully);
    }

    [Fact]
    public void Shared_BeforeTheLease_StandbyNamingTheLeader()
    {
        Leadership shared = Leadership.Shared(_time, TimeSpan.FromSeconds(8));
        Assert.Equal("standby; no coordinator holds the leader lease yet", shared.StandbyDetail);

        shared.StandBy("https://a:7443");

        Assert.False(shared.Serving);
        Assert.False(shared.WhenLeading(CancellationToken.None).IsCompleted);
        Assert.Equal("https://a:7443", shared.LeaderAddress);
        Assert.Equal("standby; the leader is https://a:7443", shared.StandbyDetail);
    }

    [Fact]
    public void Shared_RenewedThenSilentForTheLease_StopsServingOnItsOwnClock()
    {
        Leadership shared = Leadership.Shared(_time, TimeSpan.FromSeconds(8));
        shared.Renewed(_time.GetTimestamp(), "https://b:7443");
        Assert.True(shared.Serving);
        Assert.True(shared.WhenLeading(CancellationToken.None).IsCompletedSuccessfully);

        _time.Advance(TimeSpan.FromSeconds(7.9));
        Assert.True(shared.Serving);
        _time.Advance(TimeSpan.FromSeconds(0.2));

        Assert.False(shared.Serving);
        Assert.Null(shared.LeaderAddress);
        Assert.Equal("standby; this coordinator's leader lease ran out before it could renew it", shared.StandbyDetail);
        shared.Renewed(_time.GetTimestamp(), "https://b:7443");
        Assert.True(shared.Serving);
    }

    [Fact]
    public void Depose_Leader_StandbyNamingTheSuccessor()
    {
        Leadership shared = Leadership.Shared(_time, TimeSpan.FromSeconds(8));
        shared.Renewed(_time.GetTimestamp(), "https://b:7443");

        shared.Depose("https://c:7443");

        Assert.False(shared.Serving);
        Assert.Equal("standby; the leader is https://c:7443", shared.StandbyDetail);
    }

    [Theory]
    [InlineData(1.9)]
    [InlineData(301)]
    [InlineData(double.NaN)]
    public void LeaseTiming_OutOfRange_NamesTheRange(double seconds)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new LeaseTiming(seconds));

        Assert.Contains("2..300 seconds", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LeaseTiming_Default_RenewsFourTimesAndPollsEverySecond()
    {
        var timing = new LeaseTiming(LeaseTiming.DefaultSeconds);

        Assert.Equal((TimeSpan.FromSeconds(8), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(1)), (timing.Duration, timing.RenewInterval, timing.PollInterval));
    }

    [Theory]
    [InlineData(1.0, "", "the lease must be in 2..300 seconds")]
    [InlineData(8.0, "http://a:7443", "advertised address 'http://a:7443' is not an https://HOST:PORT address")]
    [InlineData(8.0, "https://a:7443/path", "is not an https://HOST:PORT address")]
    public void Validate_BadLeaseSettings_NamesTheValue(double seconds, string advertised, string expected)
    {
        var options = new CoordinatorOptions { Pki = "p", LeaseSeconds = seconds, AdvertisedAddress = advertised };

        var ex = Assert.ThrowsAny<ArgumentException>(options.Validate);

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }
}
