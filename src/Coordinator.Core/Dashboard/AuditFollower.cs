using System.Globalization;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Coordinator.Cli;
using Federated.Protos.V1;

namespace Federated.Coordinator.Dashboard;

/// <summary>One round of a run as the audit trail tells it: who was selected, who survived, what it cost.</summary>
internal sealed class RoundHistory(uint round)
{
    public uint Round { get; } = round;

    public int Selected { get; set; }

    public int Declined { get; set; }

    public int? Survivors { get; set; }

    public double? EpsilonAfter { get; set; }

    public string? FailedReason { get; set; }

    /// <summary>Selected participants whose input was not in the released sum (declines included); null while the round is open.</summary>
    public int? Dropouts => Survivors is { } s ? Math.Max(0, Selected - s) : FailedReason is null ? null : Selected;
}

/// <summary>A run as the audit trail tells it (the admin API has no run listing: run.start entries are the index).</summary>
internal sealed class RunHistory(string runId, string population, double plannedEpsilon)
{
    public string RunId { get; } = runId;

    public string Population { get; } = population;

    public double PlannedEpsilon { get; } = plannedEpsilon;

    public SortedDictionary<uint, RoundHistory> Rounds { get; } = [];

    public RoundHistory Round(uint round)
    {
        if (!Rounds.TryGetValue(round, out RoundHistory? history))
        {
            history = new RoundHistory(round);
            Rounds.Add(round, history);
        }
        return history;
    }
}

/// <summary>An audit entry as shown in the tail: its fields as the canonical JSON holds them.</summary>
internal sealed record AuditLine(ulong Sequence, string Time, string Actor, string Action, string Details, string Hash);

/// <summary>
/// Reads the audit trail incrementally over the admin API and checks it as it arrives: each poll re-reads the last
/// entry it already holds (its hash must not have changed), checks every new hash, every link and, at the head, the
/// head signature with the coordinator's TLS key. Runs and their rounds are derived from the verified entries.
/// </summary>
internal sealed class AuditFollower
{
    /// <summary>How many entries the page's tail shows.</summary>
    public const int TailLength = 50;

    /// <summary>Entries read per call while catching up.</summary>
    public const uint PageSize = 1000;

    private readonly Dictionary<string, RunHistory> _runs = new(StringComparer.Ordinal);
    private readonly List<string> _runOrder = [];
    private readonly Queue<AuditLine> _tail = new();
    private ulong _lastSequence;
    private string? _lastHash;

    /// <summary>Null while every entry read so far verifies; otherwise the first problem, which sticks.</summary>
    public string? Problem { get; private set; }

    public ulong HeadSequence { get; private set; }

    public string HeadHash { get; private set; } = "";

    public IReadOnlyList<RunHistory> Runs => [.. _runOrder.Select(id => _runs[id])];

    public IReadOnlyList<AuditLine> Tail => [.. _tail];

    /// <summary>Reads what is new since the last poll; a refusal of the call propagates (the caller shows it).</summary>
    public async Task PollAsync(AdminConnection connection, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        if (Problem is not null)
        {
            return; // a trail that failed to verify is not read further: what follows would not be trustworthy either
        }
        while (true)
        {
            ulong from = Math.Max(1, _lastSequence);
            var request = new GetAuditRequest { FromSequence = from, Limit = PageSize };
            GetAuditResponse response = await connection.CallAsync(o => connection.Admin.GetAuditAsync(request, o), cancellationToken);
            ulong before = _lastSequence;
            if (!Accept(response, from, connection.ServerCertificate))
            {
                return;
            }
            // Caught up, or a slice that brought nothing new (a coordinator that claims a head it does not serve must
            // not keep the dashboard asking forever): the next poll goes on from here.
            if (_lastSequence >= response.HeadSequence || _lastSequence == before)
            {
                return;
            }
        }
    }

    /// <summary>Checks one slice and folds its new entries in; false when it does not verify (Problem says why).</summary>
    internal bool Accept(GetAuditResponse response, ulong from, X509Certificate2? server)
    {
        ArgumentNullException.ThrowIfNull(response);
        string? problem = AuditShowCommand.Check(response, from, server);
        if (problem is null && _lastSequence > 0)
        {
            // The entry this follower already holds must come back unchanged: the chain may grow, never change.
            if (response.Entries.Count == 0 || response.Entries[0].Sequence != _lastSequence || response.Entries[0].Hash != _lastHash)
            {
                problem = $"entry {_lastSequence} changed or vanished since it was first read";
            }
        }
        if (problem is not null)
        {
            Problem = problem;
            return false;
        }
        foreach (AuditEntry entry in response.Entries)
        {
            if (entry.Sequence <= _lastSequence)
            {
                continue;
            }
            Fold(entry);
            _lastSequence = entry.Sequence;
            _lastHash = entry.Hash;
        }
        HeadSequence = response.HeadSequence;
        HeadHash = response.HeadHash;
        return true;
    }

    private void Fold(AuditEntry entry)
    {
        using JsonDocument document = JsonDocument.Parse(entry.CanonicalJson); // well-formed: Check parsed it
        JsonElement root = document.RootElement;
        string action = Text(root, "action");
        var details = new Dictionary<string, string>(StringComparer.Ordinal);
        if (root.TryGetProperty("details", out JsonElement d) && d.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonProperty property in d.EnumerateObject())
            {
                details[property.Name] = property.Value.ValueKind == JsonValueKind.String ? property.Value.GetString()! : property.Value.GetRawText();
            }
        }
        _tail.Enqueue(new AuditLine(entry.Sequence, Text(root, "time"), Text(root, "actor"), action,
            string.Join(" ", details.Select(p => $"{p.Key}={p.Value}")), entry.Hash));
        while (_tail.Count > TailLength)
        {
            _tail.Dequeue();
        }
        if (!details.TryGetValue("run_id", out string? runId))
        {
            return;
        }
        if (action == "run.start")
        {
            if (!_runs.ContainsKey(runId))
            {
                _runs[runId] = new RunHistory(runId, details.GetValueOrDefault("population", ""), Number(details, "planned_epsilon") ?? double.NaN);
                _runOrder.Add(runId);
            }
            return;
        }
        if (!_runs.TryGetValue(runId, out RunHistory? run) || !details.TryGetValue("round", out string? roundText)
            || !uint.TryParse(roundText, NumberStyles.None, CultureInfo.InvariantCulture, out uint round))
        {
            return;
        }
        RoundHistory history = run.Round(round);
        switch (action)
        {
            case "round.start":
                string participants = details.GetValueOrDefault("participants", "");
                history.Selected = participants.Length == 0 ? 0 : participants.Split(',').Length;
                break;
            case "round.decline":
                history.Declined++;
                break;
            case "round.complete":
                history.Survivors = Number(details, "survivors") is { } s ? (int)s : null;
                history.EpsilonAfter = Number(details, "epsilon_after");
                break;
            case "round.fail":
                history.FailedReason = details.GetValueOrDefault("reason", "failed");
                break;
        }
    }

    private static string Text(JsonElement root, string name) =>
        root.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString()! : "";

    private static double? Number(Dictionary<string, string> details, string name) =>
        details.TryGetValue(name, out string? text) && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) ? value : null;
}
