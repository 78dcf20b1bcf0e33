using System.Globalization;
using System.Net;
using System.Text;
using Federated.Coordinator.Cli;
using Federated.Protos.V1;
using Federated.Trust;

namespace Federated.Coordinator.Dashboard;

/// <summary>
/// Renders the dashboard as HTML on the server. Every value that came over the network (run ids, client ids, audit
/// details, error messages) goes through <see cref="Text"/>; the only markup is this class's own. CSS and the refresh
/// script are inline (the script carries the response's CSP nonce): the page fetches nothing but its own fragment.
/// </summary>
internal static class DashboardPage
{
    /// <summary>How often the page re-reads its fragment.</summary>
    public const int RefreshMilliseconds = 2000;

    private const string Css = """
        body{font:14px system-ui,sans-serif;margin:1.5em;color:#1d232a;background:#fafbfc}
        h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}h3{font-size:1em;margin:1em 0 .3em}
        table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
        th{background:#eef1f4}.muted{color:#6a737d}.bad{color:#b42318;font-weight:600}.good{color:#1a7f37;font-weight:600}
        .notice{background:#fff8c5;border:1px solid #d4a72c;padding:.4em .8em}.charts{display:flex;gap:1.5em;flex-wrap:wrap}
        svg text{font-size:10px;fill:#57606a}.axis{stroke:#8c959f}polyline.epsilon{fill:none;stroke:#0969da;stroke-width:2}
        circle.epsilon{fill:#0969da}.planned{stroke:#cf222e;stroke-dasharray:4 3}.survived{fill:#2da44e}.dropped{fill:#cf222e}.open{fill:#afb8c1}
        button.abort{background:#cf222e;color:#fff;border:0;padding:3px 10px;border-radius:4px;cursor:pointer}
        code{font-size:12px}
        """;

    /// <summary>The whole page: head, inline style, the live fragment and the refresh script.</summary>
    public static string Document(DashboardSnapshot snapshot, string abortToken, string nonce)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Federated dashboard</title>");
        html.Append("<style nonce=\"").Append(Text(nonce)).Append("\">").Append(Css).Append("</style></head><body>");
        html.Append("<main id=\"live\">").Append(Fragment(snapshot, abortToken)).Append("</main>");
        html.Append("<script nonce=\"").Append(Text(nonce)).Append("\">");
        html.Append(CultureInfo.InvariantCulture, $$"""
            setInterval(async () => {
              try {
                const response = await fetch('/fragment', { cache: 'no-store', credentials: 'same-origin' });
                if (response.ok) { document.getElementById('live').innerHTML = await response.text(); }
              } catch (e) { /* the dashboard stopped: keep the last view */ }
            }, {{RefreshMilliseconds}});
            """);
        html.Append("</script></body></html>");
        return html.ToString();
    }

    /// <summary>The live part, re-rendered on each poll.</summary>
    public static string Fragment(DashboardSnapshot snapshot, string abortToken)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        string role = FederationRoleExtension.Name(snapshot.Role);
        var html = new StringBuilder();
        html.Append("<h1>Federated dashboard</h1><p class=\"muted\">coordinator <code>").Append(Text(snapshot.Coordinator))
            .Append("</code> · signed in as <b id=\"caller\">").Append(Text(snapshot.Caller)).Append("</b> (role <span id=\"role\">").Append(role)
            .Append("</span>) · read at ").Append(snapshot.ReadAt.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture)).Append("</p>");
        if (snapshot.Notice is { } notice)
        {
            html.Append("<p class=\"notice\" id=\"notice\">").Append(Text(notice)).Append("</p>");
        }
        Runs(html, snapshot, abortToken);
        Clients(html, snapshot.Clients);
        Budgets(html, snapshot.Budgets);
        Audit(html, snapshot);
        return html.ToString();
    }

    /// <summary>HTML-escapes a value for text and quoted attributes (&amp; &lt; &gt; &quot; &#39;).</summary>
    public static string Text(string? value) => WebUtility.HtmlEncode(value ?? "");

    private static void Runs(StringBuilder html, DashboardSnapshot snapshot, string abortToken)
    {
        html.Append("<section id=\"runs\"><h2>Runs</h2>");
        if (Unavailable(html, snapshot.Runs, out IReadOnlyList<DashboardRun>? runs))
        {
            html.Append("</section>");
            return;
        }
        if (runs.Count == 0)
        {
            html.Append("<p class=\"muted\">no run has been started</p></section>");
            return;
        }
        html.Append("<table><tr><th>run</th><th>population</th><th>state</th><th>round</th><th>released</th><th>stage</th><th>reported</th><th>epsilon spent / budget</th><th>planned epsilon</th>");
        html.Append(snapshot.CanAbort ? "<th>control</th></tr>" : "</tr>");
        foreach (DashboardRun run in runs)
        {
            RunStatus? s = run.Status;
            string id = Text(run.History.RunId);
            html.Append("<tr class=\"run\" data-run=\"").Append(id).Append("\"><td><code>").Append(id).Append("</code></td><td>").Append(Text(Population(run.History.Population))).Append("</td>");
            if (s is null)
            {
                html.Append("<td colspan=\"6\" class=\"bad\">").Append(Text(run.StatusProblem)).Append("</td>");
            }
            else
            {
                html.Append("<td class=\"state\">").Append(Text(Rounds.WireNames.State(s.State))).Append(s.Detail.Length > 0 ? $": {Text(s.Detail)}" : "").Append("</td>")
                    .Append(CultureInfo.InvariantCulture, $"<td>{s.CurrentRound} / {s.PlannedRounds}</td><td>{s.ReleasedRounds}</td>")
                    .Append("<td>").Append(Text(AdminOutput.Stage(s.Stage))).Append("</td>")
                    .Append(CultureInfo.InvariantCulture, $"<td>{s.Reported} / {s.Selected}</td>")
                    .Append("<td class=\"epsilon\">").Append(Num(s.EpsilonSpent)).Append(" / ").Append(Num(s.EpsilonBudget))
                    .Append(" <span class=\"muted\">").Append(Text(AdminOutput.StatedFor(s.Delta, s.PrivacyUnit, s.Adjacency))).Append("</span></td>");
            }
            html.Append("<td>").Append(Num(run.History.PlannedEpsilon)).Append("</td>");
            if (snapshot.CanAbort)
            {
                html.Append("<td>");
                if (s?.State is RunState.Pending or RunState.Running)
                {
                    html.Append("<form method=\"post\" action=\"/abort\"><input type=\"hidden\" name=\"run\" value=\"").Append(id)
                        .Append("\"><input type=\"hidden\" name=\"token\" value=\"").Append(Text(abortToken))
                        .Append("\"><button type=\"submit\" class=\"abort\" id=\"abort-").Append(id).Append("\">Abort run</button></form>");
                }
                html.Append("</td>");
            }
            html.Append("</tr>");
        }
        html.Append("</table>");
        foreach (DashboardRun run in runs)
        {
            RoundsOf(html, run.History, run.Status?.PlannedRounds ?? 0);
        }
        html.Append("</section>");
    }

    private static void RoundsOf(StringBuilder html, RunHistory run, uint plannedRounds)
    {
        string id = Text(run.RunId);
        html.Append("<div class=\"rounds\" id=\"rounds-").Append(id).Append("\"><h3>Rounds of run <code>").Append(id).Append("</code></h3>");
        html.Append("<p class=\"muted loss\">held-out loss: not shown, the admin API does not carry it (no RPC reports an evaluation loss)</p>");
        html.Append("<div class=\"charts\">").Append(RoundCharts.Epsilon(run, plannedRounds)).Append(RoundCharts.Participation(run, plannedRounds)).Append("</div>");
        if (run.Rounds.Count == 0)
        {
            html.Append("<p class=\"muted\">no round has started</p></div>");
            return;
        }
        html.Append("<table><tr><th>round</th><th>selected</th><th>declined</th><th>survivors</th><th>dropouts</th><th>epsilon after</th><th>outcome</th></tr>");
        foreach (RoundHistory round in run.Rounds.Values)
        {
            string outcome = round.EpsilonAfter is not null ? "released" : round.FailedReason is { } reason ? "failed: " + reason : "in progress";
            html.Append(CultureInfo.InvariantCulture, $"<tr class=\"round\"><td>{round.Round}</td><td>{round.Selected}</td><td>{round.Declined}</td>")
                .Append("<td>").Append(round.Survivors?.ToString(CultureInfo.InvariantCulture) ?? "-").Append("</td><td>")
                .Append(round.Dropouts?.ToString(CultureInfo.InvariantCulture) ?? "-").Append("</td><td>")
                .Append(round.EpsilonAfter is { } e ? Num(e) : "-").Append("</td><td>").Append(Text(outcome)).Append("</td></tr>");
        }
        html.Append("</table></div>");
    }

    private static void Clients(StringBuilder html, Section<IReadOnlyList<ClientInfo>> section)
    {
        html.Append("<section id=\"clients\"><h2>Clients</h2>");
        if (!Unavailable(html, section, out IReadOnlyList<ClientInfo>? clients))
        {
            html.Append("<table><tr><th>client</th><th>available</th><th>last seen</th><th>rounds</th><th>population</th><th>epsilon</th></tr>");
            foreach (ClientInfo c in clients)
            {
                html.Append("<tr class=\"client\"><td><code>").Append(Text(c.ClientId)).Append("</code></td><td>").Append(c.Available ? "yes" : "no")
                    .Append("</td><td>").Append(Text(AdminOutput.Time(c.LastSeenAt) ?? "-"))
                    .Append(CultureInfo.InvariantCulture, $"</td><td>{c.RoundsParticipated}</td><td>").Append(Text(c.Population.Length == 0 ? "-" : c.Population))
                    .Append("</td><td>").Append(c.Population.Length == 0 ? "0" : Num(c.Epsilon) + " <span class=\"muted\">" + Text(AdminOutput.StatedFor(c.Delta, c.PrivacyUnit, c.Adjacency)) + "</span>")
                    .Append("</td></tr>");
            }
            html.Append("</table>");
        }
        html.Append("</section>");
    }

    private static void Budgets(StringBuilder html, Section<IReadOnlyList<Budget>> section)
    {
        html.Append("<section id=\"budgets\"><h2>Budgets</h2>");
        if (!Unavailable(html, section, out IReadOnlyList<Budget>? budgets))
        {
            html.Append("<table><tr><th>population</th><th>epsilon</th><th>delta</th><th>spent</th><th>reserved</th><th>remaining</th><th>set by</th></tr>");
            foreach (Budget b in budgets)
            {
                html.Append("<tr class=\"budget\"><td>").Append(Text(Population(b.Population))).Append("</td><td>").Append(Num(b.Epsilon)).Append("</td><td>")
                    .Append(Num(b.Delta)).Append("</td><td>").Append(Num(b.EpsilonSpent)).Append("</td><td>").Append(Num(b.EpsilonReserved))
                    .Append("</td><td>").Append(Num(b.EpsilonRemaining)).Append("</td><td>").Append(Text(b.SetBy)).Append("</td></tr>");
            }
            html.Append("</table>");
        }
        html.Append("</section>");
    }

    private static void Audit(StringBuilder html, DashboardSnapshot snapshot)
    {
        html.Append("<section id=\"audit\"><h2>Audit trail</h2>");
        if (!Unavailable(html, snapshot.Audit, out IReadOnlyList<AuditLine>? lines))
        {
            html.Append(snapshot.AuditProblem is { } problem
                ? $"<p class=\"bad\" id=\"audit-state\">VERIFICATION FAILED: {Text(problem)}</p>"
                : $"<p class=\"good\" id=\"audit-state\">verified: every hash and link, head #{snapshot.AuditHeadSequence} signed by the coordinator's TLS key</p>");
            html.Append("<p class=\"muted\">head <code>").Append(Text(snapshot.AuditHeadHash)).Append("</code>; the last ").Append(AuditFollower.TailLength).Append(" entries:</p>");
            html.Append("<table><tr><th>#</th><th>time</th><th>actor</th><th>action</th><th>details</th></tr>");
            foreach (AuditLine line in lines.Reverse())
            {
                html.Append(CultureInfo.InvariantCulture, $"<tr class=\"audit\"><td>{line.Sequence}</td><td>").Append(Text(line.Time)).Append("</td><td>").Append(Text(line.Actor))
                    .Append("</td><td>").Append(Text(line.Action)).Append("</td><td>").Append(Text(line.Details)).Append("</td></tr>");
            }
            html.Append("</table>");
        }
        html.Append("</section>");
    }

    /// <summary>Writes the "not available" line and returns true when the section has no value.</summary>
    private static bool Unavailable<T>(StringBuilder html, Section<T> section, [System.Diagnostics.CodeAnalysis.NotNullWhen(false)] out T? value) where T : class
    {
        value = section.Value;
        if (value is not null)
        {
            return false;
        }
        html.Append("<p class=\"muted unavailable\">").Append(Text(section.Unavailable)).Append("</p>");
        return true;
    }

    private static string Population(string population) => population.Length == 0 ? "default" : population;

    private static string Num(double value) => Text(AdminOutput.Number(value));
}
