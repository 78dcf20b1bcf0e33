using Federated.Coordinator.Cli;
using Federated.Coordinator.Dashboard;
using Federated.Trust;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>The dashboard's reads against a real coordinator over mutual TLS: what each role sees and when it polls again.</summary>
public sealed class DashboardReaderTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private AdminConnection Connect(string identity) =>
        AdminConnection.Open(new AdminEndpoint(coordinator.Address, coordinator.Identity(identity), coordinator.CaPath, password: null));

    [Fact]
    public async Task ReadAsync_Officer_ClientsRefusedByTheCoordinatorAuditVerified()
    {
        using AdminConnection officer = Connect("officer");
        using var reader = new DashboardReader(officer, TimeProvider.System);

        DashboardSnapshot snapshot = await reader.ReadAsync(CancellationToken.None);

        Assert.Equal(FederationRole.Officer, snapshot.Role);
        Assert.Equal("officer", snapshot.Caller);
        Assert.False(snapshot.CanAbort);
        Assert.Equal("not available to role officer", snapshot.Clients.Unavailable);
        Assert.NotNull(snapshot.Budgets.Value);
        Assert.NotNull(snapshot.Audit.Value);
        Assert.Null(snapshot.AuditProblem);
    }

    [Fact]
    public async Task ReadAsync_Engineer_BudgetsRefusedClientsListed()
    {
        using AdminConnection engineer = Connect("engineer");
        using var reader = new DashboardReader(engineer, TimeProvider.System);

        DashboardSnapshot snapshot = await reader.ReadAsync(CancellationToken.None);

        Assert.True(snapshot.CanAbort);
        Assert.Equal("not available to role engineer", snapshot.Budgets.Unavailable);
        Assert.NotNull(snapshot.Clients.Value);
    }

    [Fact]
    public async Task ReadAsync_Client_EverySectionRefused()
    {
        using AdminConnection client = Connect("alice");
        using var reader = new DashboardReader(client, TimeProvider.System);

        DashboardSnapshot snapshot = await reader.ReadAsync(CancellationToken.None);

        Assert.False(snapshot.CanAbort);
        Assert.Equal("not available to role client", snapshot.Runs.Unavailable);
        Assert.Equal("not available to role client", snapshot.Clients.Unavailable);
        Assert.Equal("not available to role client", snapshot.Budgets.Unavailable);
        Assert.Equal("not available to role client", snapshot.Audit.Unavailable);
    }

    [Fact]
    public async Task ReadAsync_WithinReuseWindow_OnePollServesBoth_NotifyOrTimeReadsAgain()
    {
        using AdminConnection engineer = Connect("engineer");
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var reader = new DashboardReader(engineer, time);

        DashboardSnapshot first = await reader.ReadAsync(CancellationToken.None);
        DashboardSnapshot again = await reader.ReadAsync(CancellationToken.None);
        time.Advance(DashboardReader.ReuseWithin);
        DashboardSnapshot later = await reader.ReadAsync(CancellationToken.None);
        reader.Notify("run x aborted");
        DashboardSnapshot notified = await reader.ReadAsync(CancellationToken.None);

        Assert.Same(first, again);
        Assert.NotSame(first, later);
        Assert.NotSame(later, notified);
        Assert.Null(later.Notice);
        Assert.Equal("run x aborted", notified.Notice);
    }
}
