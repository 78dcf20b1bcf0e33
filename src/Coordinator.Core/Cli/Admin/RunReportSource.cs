using System.Globalization;
using System.Text.Json;
using Federated.Coordinator.Reports;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Federated.Wire;
using Grpc.Core;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Gathers a run report over the admin API: the run's status, its rounds from the signed audit trail (round.start names
/// the selected clients, round.decline the declines, round.complete the survivors and the epsilon after the round,
/// round.fail a round that released nothing), checked link by link up to the signed head, and the ledger's epsilon per
/// charged round where the caller's role may read the ledger (an officer; the audit carries the same number for an engineer).
/// </summary>
internal static class RunReportSource
{
    /// <summary>Audit entries per call: the server's largest page.</summary>
    private const uint AuditPage = 10_000;

    public static async Task<RunReport> ReadAsync(AdminConnection connection, string runId, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        // First, so an unknown run is the server's one-line NotFound before anything else is read.
        RunStatus status = await connection.CallAsync(o => connection.Admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = runId }, o), cancellationToken);
        GetAuditResponse audit = await ReadAuditAsync(connection, cancellationToken);
        if (AuditShowCommand.Check(audit, 1, connection.ServerCertificate) is { } problem)
        {
            throw new AdminCallException(StatusCode.DataLoss, $"the audit trail does not verify, so no report is written from it: {problem}");
        }
        Dictionary<int, RoundRecord> rounds = Rounds(audit, runId);

        IReadOnlyList<LedgerEntry>? ledger = null;
        try
        {
            ledger = (await connection.CallAsync(o => connection.Admin.GetLedgerAsync(new GetLedgerRequest { RunId = runId }, o), cancellationToken)).Entries;
        }
        catch (AdminCallException ex) when (ex.Status == StatusCode.PermissionDenied)
        {
            // An engineer may not read the ledger; round.complete in the audit holds the same epsilon_after.
        }
        if (ledger is not null)
        {
            foreach (LedgerEntry entry in ledger)
            {
                if (rounds.TryGetValue((int)entry.Round, out RoundRecord? round))
                {
                    round.EpsilonAfter = entry.EpsilonAfter;
                }
            }
        }

        ReportRound[] reported = [.. rounds.Values.OrderBy(r => r.Round).Select(r => r.ToReport())];
        string epsilonSource = ledger is not null
            ? "Epsilon after each round: the privacy ledger's charge for the round (as 'ledger show' prints it)."
            : "Epsilon after each round: the round.complete entry of the signed audit trail (the ledger's own number; this identity may not read the ledger itself).";
        return new RunReport(
            status.RunId,
            $"Run report: {status.RunId}",
            [
                ("state", WireNames.State(status.State)),
                ("rounds released", $"{status.ReleasedRounds} of {status.PlannedRounds} planned" + (status.FailedRounds > 0 ? $" ({status.FailedRounds} failed, released nothing)" : "")),
                ("privacy unit", PrivacyUnitWire.Name(status.RunPrivacyUnit)),
                ("epsilon spent", status.RunPrivacyUnit == PrivacyUnit.Record
                    ? "none client-level: a record-only run adds no client-level noise and charges no budget"
                    : (status.EpsilonBudget > 0 ? $"{AdminOutput.Number(status.EpsilonSpent)} of budget {AdminOutput.Number(status.EpsilonBudget)}" : AdminOutput.Number(status.EpsilonSpent))
                        + $" {AdminOutput.StatedFor(status.Delta, status.PrivacyUnit, status.Adjacency)}"),
                ("record level", PrivacyUnitWire.HasRecordLevel(status.RunPrivacyUnit)
                    ? $"DP-SGD at every edge: noise multiplier {AdminOutput.Number(status.RecordNoiseMultiplier)}, clip {AdminOutput.Number(status.RecordMaxGradNorm)}, "
                        + $"expected batch {status.RecordExpectedBatch}; each holder's record epsilon depends on its own record count and stays in its edge ledger"
                    : "none"),
                ("adapter sha256", status.AdapterSha256),
                ("detail", status.Detail),
                ("run updated", AdminOutput.Time(status.UpdatedAt) ?? ""),
                ("audit", $"verified from entry 1 to the signed head #{audit.HeadSequence}"),
                ("report written", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture)),
            ],
            reported,
            [
                epsilonSource,
                "Participation: selected clients from round.start, declines from round.decline, survivors (the clients whose masked input was summed into the release) from round.complete; dropouts are the rest. A failed round records no survivors.",
            ],
            "No loss plot: the coordinator never holds a loss. It sees only the masked, noisy sum of the clients' updates, and "
            + "held-out data stays on the edge. 'coordinator simulate' evaluates each round's adapter and its report plots the held-out loss.");
    }

    /// <summary>The whole audit trail, page by page, as one response ending at the head (which Check verifies).</summary>
    private static async Task<GetAuditResponse> ReadAuditAsync(AdminConnection connection, CancellationToken cancellationToken)
    {
        var all = new GetAuditResponse();
        ulong from = 1;
        while (true)
        {
            var request = new GetAuditRequest { FromSequence = from, Limit = AuditPage };
            GetAuditResponse page = await connection.CallAsync(o => connection.Admin.GetAuditAsync(request, o), cancellationToken);
            all.Entries.Add(page.Entries);
            all.HeadSequence = page.HeadSequence;
            all.HeadHash = page.HeadHash;
            all.HeadSignature = page.HeadSignature;
            if (page.Entries.Count == 0 || page.Entries[^1].Sequence >= page.HeadSequence)
            {
                return all;
            }
            from = page.Entries[^1].Sequence + 1;
        }
    }

    private static Dictionary<int, RoundRecord> Rounds(GetAuditResponse audit, string runId)
    {
        var rounds = new Dictionary<int, RoundRecord>();
        var declines = new List<(int Round, string Client)>();
        foreach (AuditEntry entry in audit.Entries)
        {
            using JsonDocument document = JsonDocument.Parse(entry.CanonicalJson);
            JsonElement root = document.RootElement;
            if (!root.TryGetProperty("details", out JsonElement details) || Detail(details, "run_id") != runId
                || !int.TryParse(Detail(details, "round"), NumberStyles.None, CultureInfo.InvariantCulture, out int number))
            {
                continue;
            }
            switch (root.GetProperty("action").GetString())
            {
                case "round.start":
                    rounds[number] = new RoundRecord(number)
                    {
                        Selected = (Detail(details, "participants") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal),
                    };
                    break;
                case "round.decline" when Detail(details, "client_id") is { } client:
                    declines.Add((number, client));
                    break;
                case "round.complete" when rounds.TryGetValue(number, out RoundRecord? completed):
                    completed.Outcome = ReportRoundOutcome.Released;
                    completed.Survivors = int.Parse(Detail(details, "survivors") ?? "0", NumberStyles.None, CultureInfo.InvariantCulture);
                    completed.EpsilonAfter = double.Parse(Detail(details, "epsilon_after") ?? "NaN", NumberStyles.Float, CultureInfo.InvariantCulture);
                    break;
                case "round.fail" when rounds.TryGetValue(number, out RoundRecord? failed):
                    failed.Outcome = ReportRoundOutcome.Failed;
                    break;
            }
        }
        // A decline may be audited before its round.start (the client answered its invitation first).
        foreach ((int number, string client) in declines)
        {
            if (rounds.TryGetValue(number, out RoundRecord? round) && round.Selected.Contains(client))
            {
                round.Declined.Add(client);
            }
        }
        return rounds;
    }

    private static string? Detail(JsonElement details, string name) =>
        details.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>A round as the audit tells it, filled in entry by entry; client names stay here and never reach the report.</summary>
    private sealed class RoundRecord(int round)
    {
        public int Round { get; } = round;

        public HashSet<string> Selected { get; init; } = [];

        public HashSet<string> Declined { get; } = new(StringComparer.Ordinal);

        public ReportRoundOutcome Outcome { get; set; } = ReportRoundOutcome.InProgress;

        public int? Survivors { get; set; }

        public double? EpsilonAfter { get; set; }

        public ReportRound ToReport() => new(Round, Outcome, Selected.Count, Survivors, Declined.Count, EpsilonAfter, HeldOutLoss: null);
    }
}
