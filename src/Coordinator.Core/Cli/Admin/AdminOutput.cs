using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Federated.Wire;
using Google.Protobuf.WellKnownTypes;
using Spectre.Console;

namespace Federated.Coordinator.Cli;

/// <summary>How admin commands print: snake_case JSON for scripts, Spectre tables for people, names instead of enum numbers.</summary>
internal static class AdminOutput
{
    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        // A population holding charges from before per-order accounting reports epsilon_spent as Infinity.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        // Not HTML: '+' in a version or '<' in a detail stays readable.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>One JSON object on one line.</summary>
    public static void Json(object value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, s_json));

    /// <summary>A console for tables that writes to the current Console.Out (so redirected output and tests see it).</summary>
    public static IAnsiConsole Terminal()
    {
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Out),
            Interactive = InteractionSupport.No,
        });
        // Piped into a file or a pager there is no width to fit; a wide table beats ids wrapped across lines.
        if (Console.IsOutputRedirected)
        {
            console.Profile.Width = RedirectedWidth;
        }
        return console;
    }

    /// <summary>Table width when output is not a terminal.</summary>
    public const int RedirectedWidth = 240;

    public static Table Table(params string[] columns)
    {
        var table = new Table().Border(TableBorder.Rounded);
        foreach (string column in columns)
        {
            table.AddColumn(new TableColumn(Markup.Escape(column)));
        }
        return table;
    }

    /// <summary>A two-column property table.</summary>
    public static Table Properties(IEnumerable<(string Name, string Value)> rows)
    {
        var table = new Table().Border(TableBorder.Rounded).HideHeaders();
        table.AddColumn("property");
        table.AddColumn("value");
        foreach ((string name, string value) in rows)
        {
            table.AddRow(Markup.Escape(name), Markup.Escape(value));
        }
        return table;
    }

    public static string? Time(Timestamp? time) =>
        time is null ? null : time.ToDateTimeOffset().UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);

    public static string Number(double value) => value.ToString("G6", CultureInfo.InvariantCulture);

    public static string Stage(RoundStage stage) => stage switch
    {
        RoundStage.Manifest => "manifest",
        RoundStage.AdvertiseKeys => "advertise_keys",
        RoundStage.ShareKeys => "share_keys",
        RoundStage.MaskedInput => "masked_input",
        RoundStage.Unmask => "unmask",
        RoundStage.Completed => "completed",
        RoundStage.Failed => "failed",
        _ => "none",
    };

    /// <summary>A run status as the JSON object `run status` and `run abort` print.</summary>
    public static object RunStatusJson(RunStatus status) => new
    {
        RunId = status.RunId,
        State = WireNames.State(status.State),
        Round = status.CurrentRound,
        PlannedRounds = status.PlannedRounds,
        ReleasedRounds = status.ReleasedRounds,
        FailedRounds = status.FailedRounds,
        WaitingFor = status.WaitingFor.ToArray(),
        StageDeadline = Time(status.StageDeadline),
        Stage = Stage(status.Stage),
        Selected = status.Selected,
        Reported = status.Reported,
        EpsilonSpent = status.EpsilonSpent,
        EpsilonBudget = status.EpsilonBudget,
        Delta = status.Delta,
        // The run's unit (client, record or both); epsilon_spent is always client-level (0 for a record-only run).
        PrivacyUnit = PrivacyUnitWire.Name(status.RunPrivacyUnit),
        Adjacency = status.Adjacency,
        RecordNoiseMultiplier = HasRecord(status) ? status.RecordNoiseMultiplier : (double?)null,
        RecordMaxGradNorm = HasRecord(status) ? status.RecordMaxGradNorm : (double?)null,
        RecordExpectedBatch = HasRecord(status) ? status.RecordExpectedBatch : (uint?)null,
        // Each holder's own claim with its last upload (unverified; the coordinator accounts none of it).
        ReportedRecordEpsilons = status.ReportedRecordEpsilons.Select(r => new { r.ClientId, r.Round, r.Epsilon, r.Delta }).ToArray(),
        Detail = status.Detail,
        AdapterSha256 = status.AdapterSha256,
        UpdatedAt = Time(status.UpdatedAt),
    };

    private static bool HasRecord(RunStatus status) => PrivacyUnitWire.HasRecordLevel(status.RunPrivacyUnit);

    /// <summary>"at delta D, client-level, replace-one": what an epsilon is stated for.</summary>
    public static string StatedFor(double delta, string unit, string adjacency) => $"at delta {Number(delta)}, {unit}-level, {adjacency}";

    /// <summary>One line of live progress: round, stage, clients reported, epsilon against the budget.</summary>
    public static string ProgressLine(RunStatus status)
    {
        string budget = status.RunPrivacyUnit == PrivacyUnit.Record
            ? "none client-level (record-only run: each edge's ledger holds its record epsilon)"
            : status.EpsilonBudget > 0
            ? $"{Number(status.EpsilonSpent)} of {Number(status.EpsilonBudget)} ({status.EpsilonSpent / status.EpsilonBudget:P0}) {StatedFor(status.Delta, status.PrivacyUnit, status.Adjacency)}"
            : $"{Number(status.EpsilonSpent)} {StatedFor(status.Delta, status.PrivacyUnit, status.Adjacency)}";
        // Once a round has ended nobody reports in it any more; the count would read as a failure.
        string reported = status.Stage is RoundStage.Completed or RoundStage.Failed or RoundStage.Unspecified
            ? $"selected {status.Selected}"
            : $"reported {status.Reported}/{status.Selected}";
        // Released rounds count against the plan; failed ones apart (the round number also counts them).
        string rounds = $"released {status.ReleasedRounds}/{status.PlannedRounds}" + (status.FailedRounds > 0 ? $" ({status.FailedRounds} failed)" : "");
        string line = $"{WireNames.State(status.State),-9} {rounds}  round {status.CurrentRound}  stage {Stage(status.Stage),-14} " +
            $"{reported,-14}  epsilon {budget}";
        if (status.WaitingFor.Count > 0)
        {
            line += $"  waiting for {string.Join(", ", status.WaitingFor.Take(8))}{(status.WaitingFor.Count > 8 ? $" and {status.WaitingFor.Count - 8} more" : "")}"
                + (status.StageDeadline is null ? "" : $" until {status.StageDeadline.ToDateTimeOffset().UtcDateTime.ToString("HH:mm:ss", CultureInfo.InvariantCulture)}Z");
        }
        return status.Detail.Length == 0 ? line : $"{line}  ({status.Detail})";
    }

    public static Table RunStatusTable(RunStatus status) => Properties(
    [
        ("run", status.RunId),
        ("state", WireNames.State(status.State)),
        ("rounds released", $"{status.ReleasedRounds} of {status.PlannedRounds}" + (status.FailedRounds > 0 ? $" ({status.FailedRounds} failed, released nothing)" : "")),
        ("round", status.CurrentRound.ToString(CultureInfo.InvariantCulture)),
        ("stage", Stage(status.Stage)),
        ("waiting for", status.WaitingFor.Count == 0 ? "" : string.Join(", ", status.WaitingFor)
            + (status.StageDeadline is null ? "" : $" until {Time(status.StageDeadline)}")),
        ("clients reported", $"{status.Reported} of {status.Selected} selected"),
        ("privacy unit", PrivacyUnitWire.Name(status.RunPrivacyUnit)),
        ("epsilon spent", status.RunPrivacyUnit == PrivacyUnit.Record ? "none client-level: a record-only run adds no client-level noise and charges no budget" : (status.EpsilonBudget > 0 ? $"{Number(status.EpsilonSpent)} of budget {Number(status.EpsilonBudget)}" : Number(status.EpsilonSpent))
            + $" {StatedFor(status.Delta, status.PrivacyUnit, status.Adjacency)}"),
        ("record level", HasRecord(status)
            ? $"DP-SGD at every edge: noise multiplier {Number(status.RecordNoiseMultiplier)}, clip {Number(status.RecordMaxGradNorm)}, expected batch {status.RecordExpectedBatch}; "
                + "each holder's record epsilon depends on its own record count: see edge-client ledger show"
            : "none"),
        ("reported record epsilon", string.Join(", ", status.ReportedRecordEpsilons.Select(r => $"{r.ClientId} {Number(r.Epsilon)} at delta {Number(r.Delta)} (round {r.Round})"))
            + (status.ReportedRecordEpsilons.Count > 0 ? "; each holder's own claim, unverified" : "")),
        ("adapter sha256", status.AdapterSha256),
        ("updated", Time(status.UpdatedAt) ?? ""),
        ("detail", status.Detail),
    ]);
}
