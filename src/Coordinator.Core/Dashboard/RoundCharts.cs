using System.Globalization;
using System.Text;

namespace Federated.Coordinator.Dashboard;

/// <summary>Inline SVG drawn on the server from a run's rounds: nothing is fetched, no script draws it.</summary>
internal static class RoundCharts
{
    private const int Width = 360;
    private const int Height = 140;
    private const int Left = 44;
    private const int Bottom = 22;
    private const int Top = 16;
    private const int Right = 12;

    /// <summary>Epsilon after each released round (the ledger's composition, as the audit entry recorded it), over the planned rounds.</summary>
    public static string Epsilon(RunHistory run, uint plannedRounds)
    {
        ArgumentNullException.ThrowIfNull(run);
        (uint Round, double Epsilon)[] points = [.. run.Rounds.Values.Where(r => r.EpsilonAfter is { } e && double.IsFinite(e)).Select(r => (r.Round, r.EpsilonAfter!.Value))];
        if (points.Length == 0)
        {
            return "<p class=\"muted\">no released round yet: no epsilon to plot</p>";
        }
        double maxEpsilon = Math.Max(points.Max(p => p.Epsilon), double.IsFinite(run.PlannedEpsilon) ? run.PlannedEpsilon : 0);
        maxEpsilon = maxEpsilon > 0 ? maxEpsilon : 1;
        uint lastRound = Math.Max(Math.Max(points.Max(p => p.Round), plannedRounds), 1);
        var svg = Open("epsilon after each released round", "epsilon-chart");
        Axes(svg, Num(maxEpsilon), lastRound, "epsilon");
        if (double.IsFinite(run.PlannedEpsilon) && run.PlannedEpsilon > 0)
        {
            double y = Y(run.PlannedEpsilon, maxEpsilon);
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{y:F1}\" x2=\"{Width - Right}\" y2=\"{y:F1}\" class=\"planned\"><title>planned epsilon {Num(run.PlannedEpsilon)}</title></line>");
        }
        svg.Append("<polyline class=\"epsilon\" points=\"");
        svg.AppendJoin(' ', points.Select(p => string.Create(CultureInfo.InvariantCulture, $"{X(p.Round, lastRound):F1},{Y(p.Epsilon, maxEpsilon):F1}")));
        svg.Append("\"/>");
        foreach ((uint round, double epsilon) in points)
        {
            svg.Append(CultureInfo.InvariantCulture,
                $"<circle cx=\"{X(round, lastRound):F1}\" cy=\"{Y(epsilon, maxEpsilon):F1}\" r=\"3\" class=\"epsilon\"><title>round {round}: epsilon {Num(epsilon)}</title></circle>");
        }
        return svg.Append("</svg>").ToString();
    }

    /// <summary>Survivors and dropouts of each round that ended (open rounds grey), stacked, over the planned rounds.</summary>
    public static string Participation(RunHistory run, uint plannedRounds)
    {
        ArgumentNullException.ThrowIfNull(run);
        RoundHistory[] rounds = [.. run.Rounds.Values.Where(r => r.Selected > 0)];
        if (rounds.Length == 0)
        {
            return "<p class=\"muted\">no round has selected participants yet</p>";
        }
        int most = Math.Max(rounds.Max(r => r.Selected), 1);
        uint lastRound = Math.Max(Math.Max(rounds.Max(r => r.Round), plannedRounds), 1);
        double barWidth = Math.Max(4, Math.Min(24, (Width - Left - Right) / (double)(lastRound + 1) * 0.6));
        var svg = Open("participants and dropouts per round", "participation-chart");
        Axes(svg, most.ToString(CultureInfo.InvariantCulture), lastRound, "clients: survived, dropped out, open");
        foreach (RoundHistory round in rounds)
        {
            int survived = round.Survivors ?? 0;
            int dropped = round.Dropouts ?? 0;
            int open = round.Selected - survived - dropped;
            double x = X(round.Round, lastRound) - barWidth / 2;
            double y = Height - Bottom;
            foreach ((int count, string css, string label) in new[] { (survived, "survived", "survived"), (dropped, "dropped", "dropped out"), (open, "open", "in progress") })
            {
                if (count <= 0)
                {
                    continue;
                }
                double h = count / (double)most * (Height - Top - Bottom);
                y -= h;
                svg.Append(CultureInfo.InvariantCulture,
                    $"<rect x=\"{x:F1}\" y=\"{y:F1}\" width=\"{barWidth:F1}\" height=\"{h:F1}\" class=\"{css}\"><title>round {round.Round}: {count} {label}</title></rect>");
            }
        }
        return svg.Append("</svg>").ToString();
    }

    private static StringBuilder Open(string title, string css) =>
        new StringBuilder().Append(CultureInfo.InvariantCulture,
            $"<svg class=\"{css}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {Width} {Height}\" width=\"{Width}\" height=\"{Height}\" role=\"img\" aria-label=\"{title}\"><title>{title}</title>");

    private static void Axes(StringBuilder svg, string yMax, uint lastRound, string caption)
    {
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left + 4}\" y=\"{Top - 2}\">{caption}</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Top}\" x2=\"{Left}\" y2=\"{Height - Bottom}\" class=\"axis\"/>");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" y1=\"{Height - Bottom}\" x2=\"{Width - Right}\" y2=\"{Height - Bottom}\" class=\"axis\"/>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 4}\" y=\"{Top + 8}\" text-anchor=\"end\">{yMax}</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 4}\" y=\"{Height - Bottom}\" text-anchor=\"end\">0</text>");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(1, lastRound):F1}\" y=\"{Height - 6}\" text-anchor=\"middle\">1</text><text x=\"{X(lastRound, lastRound):F1}\" y=\"{Height - 6}\" text-anchor=\"middle\">round {lastRound}</text>");
    }

    private static double X(uint round, uint lastRound) => Left + (Width - Left - Right) * (round / (double)(lastRound + 1));

    private static double Y(double value, double max) => Height - Bottom - value / max * (Height - Top - Bottom);

    private static string Num(double value) => value.ToString("G4", CultureInfo.InvariantCulture);
}
