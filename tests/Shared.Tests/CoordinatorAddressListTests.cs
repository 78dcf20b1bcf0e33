using Federated.Transport;

namespace Federated.Shared.Tests;

/// <summary>The --coordinator URL[,URL...] list: order kept, every bad entry named with its position.</summary>
public sealed class CoordinatorAddressListTests
{
    [Fact]
    public void TryParse_TwoAddresses_KeptInOrderAsTyped()
    {
        Assert.True(CoordinatorAddressList.TryParse("https://a.example:7443, https://b.example:7443", out CoordinatorAddressList list, out string error), error);

        Assert.Equal(["https://a.example:7443", "https://b.example:7443"], list.Addresses.Select(a => a.OriginalString));
        Assert.False(list.IsSingle);
        Assert.Equal("https://a.example:7443,https://b.example:7443", list.ToString());
    }

    [Fact]
    public void TryParse_OneAddress_IsSingle()
    {
        Assert.True(CoordinatorAddressList.TryParse("https://127.0.0.1:7443", out CoordinatorAddressList list, out _));

        Assert.True(list.IsSingle);
        Assert.Equal(new Uri("https://127.0.0.1:7443"), Assert.Single(list.Addresses));
    }

    [Theory]
    [InlineData("https://a:7443,http://b:7443", "--coordinator entry 2 of 2 'http://b:7443' is not an https:// address")]
    [InlineData("https://a:7443,b:7443", "--coordinator entry 2 of 2 'b:7443' is not an https:// address")]
    [InlineData("https://a:7443,,https://b:7443", "--coordinator entry 2 of 3 is empty")]
    [InlineData("https://a:7443,", "--coordinator entry 2 of 2 is empty")]
    [InlineData("https://a:7443,https://A:7443/", "--coordinator entry 2 of 2 'https://A:7443/' is listed twice")]
    [InlineData("ftp://a", "--coordinator 'ftp://a' is not an https:// address")]
    [InlineData(" ", "--coordinator is empty")]
    public void TryParse_BadEntry_OneLineNamingIt(string text, string expected)
    {
        Assert.False(CoordinatorAddressList.TryParse(text, out _, out string error));

        Assert.StartsWith(expected, error, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error);
    }

    [Fact]
    public void TryParse_TooMany_Refused()
    {
        string text = string.Join(",", Enumerable.Range(1, CoordinatorAddressList.MaxCount + 1).Select(i => $"https://c{i}:7443"));

        Assert.False(CoordinatorAddressList.TryParse(text, out _, out string error));

        Assert.Contains($"at most {CoordinatorAddressList.MaxCount}", error, StringComparison.Ordinal);
    }
}
