using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class PrivacyMathTests
{
    // Reference values: the C library's erfc (glibc, correctly rounded to ~1 ulp), printed by Python's math.erfc.
    [Theory]
    [InlineData(0.1, 0.8875370839817152)]
    [InlineData(0.5, 0.4795001221869535)]
    [InlineData(1.0, 0.15729920705028513)]
    [InlineData(2.0, 0.004677734981047265)]
    [InlineData(2.4999, 0.0004071699003334514)]
    [InlineData(2.5, 0.0004069520174449589)]
    [InlineData(3.0, 2.2090496998585438e-05)]
    [InlineData(5.0, 1.5374597944280351e-12)]
    [InlineData(10.0, 2.088487583762545e-45)]
    [InlineData(26.0, 5.663192408856143e-296)]
    [InlineData(-1.0, 1.842700792949715)]
    [InlineData(0.75, 0.28884436634648486)]
    [InlineData(1.53125, 0.03034830486015778)]
    [InlineData(3.99, 1.6739211364520814e-08)]
    [InlineData(4.0, 1.541725790028002e-08)]
    [InlineData(4.01, 1.4196939421371052e-08)]
    [InlineData(-3.0, 1.9999779095030015)]
    public void Erfc_KnownValues_MatchToRelative1e13(double x, double expected)
    {
        double actual = PrivacyMath.Erfc(x);
        Assert.True(Math.Abs(actual - expected) <= 1e-13 * expected, $"erfc({x}) = {actual:R}, expected {expected:R}");
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(3.0)]
    [InlineData(10.0)]
    [InlineData(26.0)]
    public void LogErfc_WhereErfcIsRepresentable_EqualsLogOfErfc(double x)
    {
        Assert.Equal(Math.Log(PrivacyMath.Erfc(x)), PrivacyMath.LogErfc(x), 1e-12);
    }

    [Fact]
    public void LogErfc_FarTail_MatchesAsymptoticExpansion()
    {
        // ln erfc(x) = -x^2 - ln(x sqrt(pi)) + ln(1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6)) (A&S 7.1.23), x = 100.
        double x = 100;
        double expected = -x * x - Math.Log(x * Math.Sqrt(Math.PI)) + Math.Log(1 - 1 / (2 * x * x) + 3 / (4 * Math.Pow(x, 4)) - 15 / (8 * Math.Pow(x, 6)));
        Assert.Equal(expected, PrivacyMath.LogErfc(x), 1e-9);
    }

    [Fact]
    public void NormalQuantileFromLog_RoundTripsThroughLogNormalCdf()
    {
        foreach (double logP in new[] { -50.0, -10.0, -2.0, Math.Log(0.25) })
        {
            double x = PrivacyMath.NormalQuantileFromLog(logP);
            Assert.Equal(logP, PrivacyMath.LogNormalCdf(x), 1e-9);
        }
    }

    [Fact]
    public void LogAddAndLogSub_SmallArguments_AreAccurate()
    {
        Assert.Equal(Math.Log(3.0), PrivacyMath.LogAdd(Math.Log(1.0), Math.Log(2.0)), 1e-15);
        Assert.Equal(Math.Log(1.0), PrivacyMath.LogSub(Math.Log(3.0), Math.Log(2.0)), 1e-15);
        // log1p(x) = x - x^2/2 + ..., expm1(x) = x + x^2/2 + ... at x = 1e-10.
        Assert.Equal(1e-10 - 5e-21, PrivacyMath.LogOnePlus(1e-10), 1e-26);
        Assert.Equal(1e-10 + 5e-21, PrivacyMath.ExpMinusOne(1e-10), 1e-26);
    }
}
