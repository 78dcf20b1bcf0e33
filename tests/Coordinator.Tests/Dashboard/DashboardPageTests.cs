using System.Text.RegularExpressions;
using Federated.Coordinator.Dashboard;
using Federated.Protos.V1;
using Federated.Trust;

namespace Federated.Coordinator.Tests.Dashboard;

public sealed partial class DashboardPageTests
{
    // Values arrive over the network (client ids, audit details, server messages): each tries to break out of text,
    // of a quoted attribute and into a script.
    private const string Script = "<script>alert(1)</script>";
    private const string Attribute = "\"><img src=x onerror=alert(2)>";
    private const string Single = "'onmouseover='alert(3)";

    private static DashboardSnapshot Snapshot(FederationRole role, bool refused = false)
    {
        var run = new RunHistory("run-1" + Attribute, "pop" + Script, 4.0);
        run.Round(1).Selected = 3;
        run.Round(1).Survivors = 2;
        run.Round(1).EpsilonAfter = 1.5;
        run.Round(2).Selected = 3;
        run.Round(2).FailedReason = "dropouts " + Script;
        var status = new RunStatus
        {
            RunId = run.RunId, State = RunState.Running, CurrentRound = 3, PlannedRounds = 5, Stage = RoundStage.AdvertiseKeys, EpsilonSpent = 1.5,
            EpsilonBudget = 10, Detail = Attribute, Delta = 1e-6, PrivacyUnit = "client" + Single, Adjacency = "replace-one",
        };
        var client = new ClientInfo { ClientId = Script, ClientVersion = Attribute, Population = Single, Epsilon = 1.5, Delta = 1e-6, PrivacyUnit = "client", Adjacency = Script };
        var budget = new Budget { Population = Attribute, Epsilon = 10, Delta = 1e-5, EpsilonSpent = 1.5, SetBy = Script, EpsilonRemaining = 8.5 };
        var audit = new AuditLine(7, Script, Attribute, "run.start" + Single, "run_id=" + Script, "ab" + Attribute);
        return new DashboardSnapshot(
            "https://coordinator" + Attribute, "engineer" + Script, role, DateTimeOffset.UnixEpoch,
            Section<IReadOnlyList<DashboardRun>>.Of([new DashboardRun(run, status, null)]),
            refused ? Section<IReadOnlyList<ClientInfo>>.Refused("not available to role officer") : Section<IReadOnlyList<ClientInfo>>.Of([client]),
            refused ? Section<IReadOnlyList<Budget>>.Refused(Script) : Section<IReadOnlyList<Budget>>.Of([budget]),
            Section<IReadOnlyList<AuditLine>>.Of([audit]),
            AuditProblem: "entry 3 " + Script, AuditHeadSequence: 7, AuditHeadHash: Attribute, Notice: "run " + Script + " aborted");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Document_HostileValuesEverywhere_NoMarkupButThePagesOwn(bool refused)
    {
        string html = DashboardPage.Document(Snapshot(FederationRole.Engineer, refused), "token" + Attribute, "bm9uY2U=");

        Assert.DoesNotContain("<script>alert", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<img", html, StringComparison.Ordinal);
        Assert.DoesNotContain("'onmouseover='", html, StringComparison.Ordinal);
        Assert.Contains("&lt;script&gt;alert(1)&lt;/script&gt;", html, StringComparison.Ordinal);
        Assert.Contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;", html, StringComparison.Ordinal);
        Assert.Contains("&#39;onmouseover=&#39;alert(3)", html, StringComparison.Ordinal);
        // The page's one script is its own refresh loop, carrying the nonce.
        Assert.Single(ScriptTag().Matches(html));
        Assert.Contains("<script nonce=\"bm9uY2U=\">", html, StringComparison.Ordinal);
        // Every attribute value is a quoted string free of the characters that end it.
        foreach (Match attribute in AttributeValue().Matches(html))
        {
            Assert.DoesNotContain('<', attribute.Groups[1].Value);
        }
    }

    [Fact]
    public void Fragment_Engineer_AbortFormPostsTheRunAndToken()
    {
        string html = DashboardPage.Fragment(Snapshot(FederationRole.Engineer), "0123abcd");

        Assert.Contains("<form method=\"post\" action=\"/abort\">", html, StringComparison.Ordinal);
        Assert.Contains("name=\"token\" value=\"0123abcd\"", html, StringComparison.Ordinal);
        Assert.Contains("name=\"run\" value=\"run-1&quot;&gt;&lt;img src=x onerror=alert(2)&gt;\"", html, StringComparison.Ordinal);
    }

    [Fact]
    public void Fragment_Officer_NoAbortControlNorToken()
    {
        string html = DashboardPage.Fragment(Snapshot(FederationRole.Officer, refused: true), "0123abcd");

        Assert.DoesNotContain("/abort", html, StringComparison.Ordinal);
        Assert.DoesNotContain("0123abcd", html, StringComparison.Ordinal);
        Assert.DoesNotContain("Abort", html, StringComparison.Ordinal);
        Assert.Contains("not available to role officer", html, StringComparison.Ordinal);
        Assert.Contains("<span id=\"role\">officer</span>", html, StringComparison.Ordinal);
    }

    [Fact]
    public void Fragment_Rounds_ReleasedFailedAndDropoutsShown()
    {
        string html = DashboardPage.Fragment(Snapshot(FederationRole.Engineer), "t");

        Assert.Contains("<tr class=\"round\"><td>1</td><td>3</td><td>0</td><td>2</td><td>1</td><td>1.5</td><td>released</td></tr>", html, StringComparison.Ordinal);
        Assert.Contains("<tr class=\"round\"><td>2</td><td>3</td><td>0</td><td>-</td><td>3</td><td>-</td><td>failed: dropouts &lt;script&gt;", html, StringComparison.Ordinal);
        Assert.Contains("held-out loss: not shown, the admin API does not carry it", html, StringComparison.Ordinal);
        Assert.Contains("VERIFICATION FAILED: entry 3 &lt;script&gt;", html, StringComparison.Ordinal);
        Assert.Contains("<polyline class=\"epsilon\"", html, StringComparison.Ordinal);
        // One point per released round; both plots span the planned rounds (5), the failed round drawn as 3 dropouts.
        Assert.Single(Regex.Matches(html, "<circle "));
        Assert.Contains("<title>round 1: epsilon 1.5</title>", html, StringComparison.Ordinal);
        Assert.Equal(2, Regex.Matches(html, ">round 5</text>").Count);
        Assert.Contains("<title>round 2: 3 dropped out</title>", html, StringComparison.Ordinal);
    }

    [GeneratedRegex("<script", RegexOptions.IgnoreCase)]
    private static partial Regex ScriptTag();

    [GeneratedRegex("=\"([^\"]*)\"")]
    private static partial Regex AttributeValue();
}
