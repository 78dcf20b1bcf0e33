using System.Globalization;
using System.Net;
using System.Text;

namespace Federated.Coordinator.Reports;

/// <summary>
/// Writes a run report into a folder: report.html (self-contained: inline CSS, the plots embedded as data: URIs, nothing
/// fetched from elsewhere) and the plots beside it as PNG files.
/// </summary>
public static class RunReportWriter
{
    public const string HtmlFile = "report.html";

    /// <summary>A number as every admin command prints it (six significant digits), so the report matches 'ledger show'.</summary>
    public static string Number(double value) => Cli.AdminOutput.Number(value);

    /// <summary>"at delta D, client-level, replace-one": what an epsilon is stated for, as the admin commands say it.</summary>
    public static string StatedFor(double delta, string unit, string adjacency) => Cli.AdminOutput.StatedFor(delta, unit, adjacency);

    /// <summary>Writes the report's files into <paramref name="directory"/> (created if absent); returns their names, report.html last.</summary>
    public static IReadOnlyList<string> Write(RunReport report, string directory)
    {
        ArgumentNullException.ThrowIfNull(report);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        var plots = new List<(string File, string Alt, byte[] Png)>();
        if (RunReportPlots.Loss(report) is { } loss)
        {
            plots.Add((RunReportPlots.LossFile, "held-out loss per round", loss));
        }
        plots.Add((RunReportPlots.EpsilonFile, "cumulative epsilon after each released round", RunReportPlots.Epsilon(report)));
        plots.Add((RunReportPlots.ParticipationFile, "selected clients, survivors and dropouts per round", RunReportPlots.Participation(report)));
        foreach ((string file, _, byte[] png) in plots)
        {
            WriteReplacing(Path.Combine(directory, file), png);
        }
        WriteReplacing(Path.Combine(directory, HtmlFile), Encoding.UTF8.GetBytes(Html(report, plots)));
        return [.. plots.Select(p => p.File), HtmlFile];
    }

    /// <summary>The page itself; every value from the run is HTML-encoded.</summary>
    internal static string Html(RunReport report, IReadOnlyList<(string File, string Alt, byte[] Png)> plots)
    {
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>").Append(E(report.Title)).Append("</title>\n");
        html.Append("""
            <style>
            body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
            h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
            table { border-collapse: collapse; margin: 1em 0; }
            th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }
            td.n { text-align: right; font-variant-numeric: tabular-nums; }
            tr.failed td { color: #a00; }
            figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
            .note { color: #555; }
            </style>
            </head>
            <body>

            """);
        html.Append("<h1>").Append(E(report.Title)).Append("</h1>\n");
        html.Append("<table class=\"facts\">\n");
        html.Append("<tr><th>run</th><td id=\"run-id\">").Append(E(report.RunId)).Append("</td></tr>\n");
        foreach ((string label, string value) in report.Facts.Where(f => f.Value.Length > 0))
        {
            html.Append("<tr><th>").Append(E(label)).Append("</th><td>").Append(E(value)).Append("</td></tr>\n");
        }
        html.Append("</table>\n");
        foreach (string note in report.Notes)
        {
            html.Append("<p class=\"note\">").Append(E(note)).Append("</p>\n");
        }

        html.Append("<h2>Plots</h2>\n<p class=\"note\">").Append(E(report.LossNote)).Append("</p>\n");
        foreach ((string file, string alt, byte[] png) in plots)
        {
            html.Append("<figure><img alt=\"").Append(E(alt)).Append("\" src=\"data:image/png;base64,").Append(Convert.ToBase64String(png))
                .Append("\"><figcaption>").Append(E(alt)).Append(" (also ").Append(E(file)).Append(")</figcaption></figure>\n");
        }

        bool hasLoss = report.WithLoss.Any();
        html.Append("<h2>Rounds</h2>\n<table class=\"rounds\">\n<tr><th>round</th><th>outcome</th><th>selected</th><th>survivors</th><th>declined</th>")
            .Append("<th>dropouts</th><th>epsilon after</th>").Append(hasLoss ? "<th>held-out loss</th>" : "").Append("</tr>\n");
        foreach (ReportRound round in report.Rounds)
        {
            html.Append(round.Outcome == ReportRoundOutcome.Failed ? "<tr class=\"failed\">" : "<tr>")
                .Append("<td class=\"n\">").Append(round.Round.ToString(CultureInfo.InvariantCulture)).Append("</td>")
                .Append("<td>").Append(Outcome(round)).Append("</td>")
                .Append(Cell(round.Round == 0 ? null : round.Selected))
                .Append(Cell(round.Survivors))
                .Append(Cell(round.Declined))
                .Append(Cell(round.Dropouts))
                .Append("<td class=\"n epsilon\">").Append(round.EpsilonAfter is { } epsilon ? E(Number(epsilon)) : "&ndash;").Append("</td>")
                .Append(hasLoss ? Loss(round) : "")
                .Append("</tr>\n");
        }
        html.Append("</table>\n</body>\n</html>\n");
        return html.ToString();
    }

    private static string Outcome(ReportRound round) => round.Round == 0 && round.Outcome == ReportRoundOutcome.Released
        ? "baseline (before training)"
        : round.Outcome switch
        {
            ReportRoundOutcome.Released => "released",
            ReportRoundOutcome.Failed => "failed: nothing released, nothing charged",
            _ => "in progress",
        };

    private static string Loss(ReportRound round) =>
        "<td class=\"n loss\">" + (round.HeldOutLoss is { } loss && double.IsFinite(loss) ? loss.ToString("F4", CultureInfo.InvariantCulture) : "&ndash;") + "</td>";

    private static string Cell(int? value) =>
        "<td class=\"n\">" + (value is { } v ? v.ToString(CultureInfo.InvariantCulture) : "&ndash;") + "</td>";

    private static string E(string text) => WebUtility.HtmlEncode(text);

    /// <summary>Written beside the target and renamed over it, so a reader never sees half a file.</summary>
    private static void WriteReplacing(string path, byte[] content)
    {
        string temporary = path + ".tmp";
        File.WriteAllBytes(temporary, content);
        File.Move(temporary, path, overwrite: true);
    }
}
