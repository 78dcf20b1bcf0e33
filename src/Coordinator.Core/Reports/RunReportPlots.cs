using ScottPlot;

namespace Federated.Coordinator.Reports;

/// <summary>The report's PNG plots, drawn with ScottPlot: held-out loss, cumulative epsilon and participation per round.</summary>
internal static class RunReportPlots
{
    public const string LossFile = "loss.png";
    public const string EpsilonFile = "epsilon.png";
    public const string ParticipationFile = "participation.png";

    public const int Width = 800;
    public const int Height = 450;

    /// <summary>Held-out loss per round; null when no round has one (a coordinator never sees a loss).</summary>
    public static byte[]? Loss(RunReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        ReportRound[] rounds = [.. report.WithLoss];
        if (rounds.Length == 0)
        {
            return null;
        }
        Plot plot = NewPlot($"Held-out loss per round, run {report.RunId}", "held-out loss");
        Line(plot, rounds.Select(r => (double)r.Round), rounds.Select(r => r.HeldOutLoss!.Value), "held-out loss", Colors.C0);
        return Png(plot);
    }

    /// <summary>Cumulative epsilon after each released round (an empty frame when none was released yet).</summary>
    public static byte[] Epsilon(RunReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        ReportRound[] rounds = [.. report.Charged];
        Plot plot = NewPlot($"Epsilon spent after each released round, run {report.RunId}", "epsilon (cumulative)");
        if (rounds.Length > 0)
        {
            Line(plot, rounds.Select(r => (double)r.Round), rounds.Select(r => r.EpsilonAfter!.Value), "epsilon after round", Colors.C1);
        }
        return Png(plot);
    }

    /// <summary>Selected clients, survivors (summed into the release) and dropouts per round.</summary>
    public static byte[] Participation(RunReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        ReportRound[] rounds = [.. report.Selections];
        Plot plot = NewPlot($"Participation per round, run {report.RunId}", "clients");
        if (rounds.Length > 0)
        {
            Line(plot, rounds.Select(r => (double)r.Round), rounds.Select(r => (double)r.Selected), "selected", Colors.C0);
            ReportRound[] known = [.. rounds.Where(r => r.Survivors is not null)];
            Line(plot, known.Select(r => (double)r.Round), known.Select(r => (double)r.Survivors!.Value), "survivors", Colors.C2);
            Line(plot, known.Select(r => (double)r.Round), known.Select(r => (double)r.Dropouts!.Value), "dropouts", Colors.C3);
            ReportRound[] declines = [.. rounds.Where(r => r.Declined is not null)];
            if (declines.Length > 0)
            {
                Line(plot, declines.Select(r => (double)r.Round), declines.Select(r => (double)r.Declined!.Value), "declined", Colors.C4);
            }
            plot.ShowLegend(Alignment.UpperRight);
            // Counts start at zero so a dropout of one client does not look like a collapse.
            plot.Axes.SetLimitsY(0, Math.Max(1, rounds.Max(r => r.Selected)) * 1.15);
        }
        return Png(plot);
    }

    private static Plot NewPlot(string title, string yLabel)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("round");
        plot.YLabel(yLabel);
        // Rounds are whole numbers; a tick at 1.5 would name a round that does not exist.
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        return plot;
    }

    private static void Line(Plot plot, IEnumerable<double> xs, IEnumerable<double> ys, string label, Color color)
    {
        double[] x = [.. xs];
        double[] y = [.. ys];
        if (x.Length == 0)
        {
            return;
        }
        var scatter = plot.Add.Scatter(x, y, color);
        scatter.LegendText = label;
        scatter.MarkerSize = 7;
        scatter.LineWidth = 2;
    }

    private static byte[] Png(Plot plot) => plot.GetImageBytes(Width, Height, ImageFormat.Png);
}
