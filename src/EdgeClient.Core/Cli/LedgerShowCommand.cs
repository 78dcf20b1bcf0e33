using System.ComponentModel;
using System.Globalization;
using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>`edge-client ledger show`: what this machine's data has spent, per run and in total, against its policy.</summary>
internal sealed class LedgerShowCommand : Command<LedgerShowCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--identity <FILE>")]
        [Description("The client identity (NAME.pfx) that `edge-client run` uses: the ledger and policy beside it are read, as `run` writes them.")]
        public string? Identity { get; init; }

        [CommandOption("--ledger <FILE>")]
        [Description("The local ledger (default: edge-ledger.db beside --identity, or in the current folder).")]
        public string? Ledger { get; init; }

        [CommandOption("--policy <FILE>")]
        [Description("The local policy, for the delta and the budgets (default: policy.json beside --identity, or in the current folder).")]
        public string? Policy { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        // `run` keeps the ledger and reads the policy beside its identity; so does this command when given one.
        string home = ".";
        if (settings.Identity is { } identity)
        {
            if (!File.Exists(identity))
            {
                throw new UsageException($"--identity: {identity} not found");
            }
            home = Path.GetDirectoryName(Path.GetFullPath(identity))!;
        }
        string ledgerPath = settings.Ledger ?? Path.Combine(home, LocalPrivacyLedger.FileName);
        string policyPath = settings.Policy ?? Path.Combine(home, LocalPolicy.FileName);
        if (!File.Exists(ledgerPath))
        {
            throw new UsageException($"--ledger: no local ledger at {ledgerPath} (it is created by the first round this machine takes part in; `edge-client run` keeps it beside --identity)");
        }
        LocalPolicy policy;
        try
        {
            policy = LocalPolicy.Load(policyPath);
        }
        catch (PolicyFileException ex)
        {
            throw new UsageException($"--policy: {ex.Message}");
        }

        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(ledgerPath);
        if (settings.Json)
        {
            Console.WriteLine(ledger.ToJson(policy.Delta, DateTimeOffset.UtcNow));
            return CliRunner.Ok;
        }

        string F(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);
        // Worst case: this machine's own noise share alone (every other participant a sybil); unbounded for central noise.
        string W(double v) => double.IsFinite(v) ? F(v) : "unbounded";
        double lifetime = ledger.Spent(policy.Delta).Epsilon;
        AnsiConsole.MarkupLine($"Lifetime epsilon [bold]{F(lifetime)}[/] of {F(policy.MaxEpsilonLifetime)} at delta {policy.Delta:g3} " +
            $"({PrivacyUnitNames.Client}-level, {PrivacyUnitNames.Name(PrivacyUnitNames.ProductAdjacency)}), {ledger.Charges.Count} rounds; " +
            $"worst case (own noise share only) {W(ledger.WorstCaseEpsilon(policy.Delta))}.");
        // The record-level unit (DP-SGD rounds): what protects one record of this machine's data, priced at its own record count.
        string Cap(double? cap) => cap is { } c ? $" of {F(c)}" : "";
        AnsiConsole.MarkupLine($"Lifetime record epsilon [bold]{F(ledger.RecordSpent(policy.Delta).Epsilon)}[/]{Cap(policy.MaxRecordEpsilonLifetime)} at delta {policy.Delta:g3} " +
            $"({PrivacyUnitNames.Record}-level, {PrivacyUnitNames.Name(PrivacyUnitNames.RecordAdjacency)}), {ledger.RecordCharges.Count} DP-SGD rounds.");
        var table = new Table().AddColumn("run").AddColumn(new TableColumn("rounds").RightAligned())
            .AddColumn(new TableColumn("epsilon").RightAligned()).AddColumn(new TableColumn("of").RightAligned())
            .AddColumn(new TableColumn("worst case").RightAligned()).AddColumn(new TableColumn("record epsilon").RightAligned())
            .AddColumn(new TableColumn("last round").RightAligned()).AddColumn("charged");
        var runs = ledger.Charges.Select(c => (c.RunId, c.Round, c.ChargedAt)).Concat(ledger.RecordCharges.Select(c => (c.RunId, c.Round, c.ChargedAt)));
        foreach (var run in runs.GroupBy(c => c.RunId))
        {
            bool client = ledger.Charges.Any(c => c.RunId == run.Key);
            bool record = ledger.RecordCharges.Any(c => c.RunId == run.Key);
            table.AddRow(Markup.Escape(run.Key), run.Select(c => c.Round).Distinct().Count().ToString(CultureInfo.InvariantCulture),
                client ? F(ledger.Spent(policy.Delta, run.Key).Epsilon) : "-", F(policy.MaxEpsilonPerRun),
                client ? W(ledger.WorstCaseEpsilon(policy.Delta, run.Key)) : "-",
                record ? F(ledger.RecordSpent(policy.Delta, run.Key).Epsilon) + Cap(policy.MaxRecordEpsilon) : "-",
                run.Max(c => c.Round).ToString(CultureInfo.InvariantCulture), run.Max(c => c.ChargedAt).ToString("u", CultureInfo.InvariantCulture));
        }
        AnsiConsole.Write(table);
        return CliRunner.Ok;
    }
}
