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
        Line(plot, rounds.Select(r => (double)r.Round), rounds.Select(r => r.HeldOutLoss!.Value), Colors.C0);
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
            Line(plot, rounds.Select(r => (double)r.Round), rounds.Select(r => r.EpsilonAfter!.Value), Colors.C1);
            // From zero: the spend is a total, and a cut axis would make the second round look like the first doubled.
            plot.Axes.SetLimitsY(0, rounds.Max(r => r.EpsilonAfter!.Value) * 1.1);
        }
        return Png(plot);
    }

    /// <summary>
    /// One stacked bar per round, as tall as the clients selected: survivors (summed into the release), declines and
    /// dropouts. A round that released nothing (or has not ended) is one grey bar: the coordinator records no survivors for it.
    /// </summary>
    public static byte[] Participation(RunReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        ReportRound[] rounds = [.. report.Selections];
        Plot plot = NewPlot($"Participation per round, run {report.RunId}", "clients");
        // Clients are whole too.
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { IntegerTicksOnly = true };
        var bars = new List<Bar>();
        foreach (ReportRound round in rounds)
        {
            if (round.Survivors is { } survivors)
            {
                int declined = round.Declined ?? 0;
                Stack(bars, round.Round, 0, survivors, s_survivors);
                Stack(bars, round.Round, survivors, survivors + declined, s_declined);
                Stack(bars, round.Round, survivors + declined, round.Selected, s_dropouts);
            }
            else
            {
                Stack(bars, round.Round, 0, round.Selected, s_unreleased);
            }
        }
        if (bars.Count > 0)
        {
            plot.Add.Bars(bars);
        }
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "survivors", FillColor = s_survivors });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "declined", FillColor = s_declined });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "dropouts", FillColor = s_dropouts });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = "selected, round released nothing", FillColor = s_unreleased });
        plot.ShowLegend(Alignment.UpperRight);
        // Counts from zero, with room above the tallest bar for the legend.
        plot.Axes.SetLimitsY(0, Math.Max(1, rounds.Select(r => r.Selected).DefaultIfEmpty(0).Max()) * 1.4);
        if (rounds.Length > 0)
        {
            plot.Axes.SetLimitsX(rounds.Min(r => r.Round) - 0.75, rounds.Max(r => r.Round) + 0.75);
        }
        return Png(plot);
    }

    private static readonly Color s_survivors = Colors.C2;
    private static readonly Color s_declined = Colors.C4;
    private static readonly Color s_dropouts = Colors.C3;
    private static readonly Color s_unreleased = Colors.Gray;

    private static void Stack(List<Bar> bars, int round, int from, int to, Color color)
    {
        if (to > from)
        {
            bars.Add(new Bar { Position = round, ValueBase = from, Value = to, FillColor = color, Size = 0.6 });
        }
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

    /// <summary>One series with markers, without a legend: the plot's title names it.</summary>
    private static void Line(Plot plot, IEnumerable<double> xs, IEnumerable<double> ys, Color color)
    {
        double[] x = [.. xs];
        double[] y = [.. ys];
        if (x.Length == 0)
        {
            return;
        }
        var scatter = plot.Add.Scatter(x, y, color);
        scatter.MarkerSize = 7;
        scatter.LineWidth = 2;
    }

    private static byte[] Png(Plot plot) => plot.GetImageBytes(Width, Height, ImageFormat.Png);
}
