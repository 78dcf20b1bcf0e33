using Federated.Coordinator.State;
using Npgsql;

namespace Federated.Coordinator.Tests.State;

/// <summary>--state: a SQLite path, keywords with Host=, or a postgresql:// URI; the password never shows.</summary>
public sealed class StateLocationTests
{
    [Fact]
    public void Parse_Path_SqliteWithTheFullPathAndTheAdaptersFolderBesideIt()
    {
        StateLocation location = StateLocation.Parse("state/coordinator.db");

        Assert.Equal(StateBackend.Sqlite, location.Backend);
        Assert.Equal(Path.GetFullPath("state/coordinator.db"), location.Path);
        Assert.Equal(Path.GetFullPath("state/adapters"), location.AdapterDirectory);
        Assert.Null(location.ConnectionString);
    }

    [Fact]
    public void Parse_Keywords_PostgresDisplayedWithoutThePassword()
    {
        StateLocation location = StateLocation.Parse("Host=db.internal;Port=5433;Database=federated;Username=coord;Password=p@ss");

        Assert.Equal(StateBackend.Postgres, location.Backend);
        Assert.Equal(("db.internal", 5433), (location.Host, location.Port));
        Assert.Equal("postgresql://coord@db.internal:5433/federated", location.Display);
        Assert.Equal("postgresql://coord@db.internal:5433/federated", location.ToString());
        Assert.Null(location.Path);
        Assert.Null(location.AdapterDirectory);
        Assert.Equal("p@ss", new NpgsqlConnectionStringBuilder(location.ConnectionString).Password);
        Assert.Equal("failed for *** here", location.Redact("failed for p@ss here"));
    }

    [Fact]
    public void Parse_Uri_ConvertedToNpgsqlKeywordsWithLibpqParameters()
    {
        StateLocation location = StateLocation.Parse("postgresql://coord:s%40cret%2Fpw@db.internal:6543/fed%20state?sslmode=verify-full&application_name=coordinator-a&connect_timeout=7");
        var builder = new NpgsqlConnectionStringBuilder(location.ConnectionString);

        Assert.Equal(("db.internal", 6543, "fed state", "coord", "s@cret/pw"), (builder.Host, builder.Port, builder.Database, builder.Username, builder.Password));
        Assert.Equal((SslMode.VerifyFull, "coordinator-a", 7), (builder.SslMode, builder.ApplicationName, builder.Timeout));
        Assert.Equal("postgresql://coord@db.internal:6543/fed%20state", location.Display);
        Assert.DoesNotContain("cret", location.Display, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_ShortSchemeIpv6AndDefaultPort_Understood()
    {
        StateLocation location = StateLocation.Parse("postgres://coord@[::1]/federated");

        Assert.Equal(("::1", 5432), (location.Host, location.Port));
        Assert.Equal("postgresql://coord@[::1]:5432/federated", location.Display);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("postgresql://coord:pw@/federated", "names no host")]
    [InlineData("postgresql://coord:pw@db:99999/federated", "port '99999'")]
    [InlineData("postgresql://coord:pw@db/federated?frobnicate=1", "unknown or invalid parameter 'frobnicate'")]
    [InlineData("Host=db;Username=coord;Password=pw", "names no Database")]
    public void Parse_Malformed_RefusedNamingTheProblemNotThePassword(string value, string expected)
    {
        var ex = Assert.Throws<ArgumentException>(() => StateLocation.Parse(value));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("pw", ex.Message.Replace("password", "", StringComparison.OrdinalIgnoreCase), StringComparison.Ordinal);
    }
}
