using System.ComponentModel;
using System.Globalization;
using System.Text.Json;
using Federated.Coordinator.State;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Copies a coordinator's state from one backend to another (SQLite to PostgreSQL and back), then verifies the copy.</summary>
internal sealed class StateCopyCommand : Command<StateCopyCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--from <FILE|CONNECTION>")]
        [Description("The state to copy (serve --state): a SQLite file, or a PostgreSQL connection string or postgresql:// URI; read only. Stop the coordinator that uses it first. Required.")]
        public string? From { get; init; }

        [CommandOption("--to <FILE|CONNECTION>")]
        [Description("Where to copy it: a new SQLite file (adapters go to the adapters folder beside it) or an empty PostgreSQL database (adapters go into it). Refused unless empty. Required.")]
        public string? To { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of text.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        StateLocation from = Parse(settings.From, "--from");
        StateLocation to = Parse(settings.To, "--to");
        if (from.Backend == StateBackend.Sqlite && !File.Exists(from.Path))
        {
            throw new UsageException($"--from '{from.Display}' does not exist");
        }
        StateCopyReport report;
        try
        {
            report = StateCopy.Copy(from, to);
        }
        catch (StateUnavailableException ex)
        {
            throw new InvalidOperationException(ex.Message, ex);
        }
        catch (Npgsql.PostgresException ex)
        {
            throw new InvalidOperationException($"PostgreSQL refused the copy ({ex.SqlState}): {to.Redact(from.Redact(ex.MessageText))}", ex);
        }
        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                from = from.Display,
                to = to.Display,
                tables = report.Tables.ToDictionary(t => t.Table, t => t.Rows),
                adapters = new { blobs = report.AdapterBlobs, bytes = report.AdapterBytes, sha256 = report.AdapterDigest },
                audit = new { entries = report.AuditEntries, head = report.AuditHeadHash, valid = true },
                ledger = report.Ledger.Select(l => new { population = l.Population, charges = l.Charges, epsilon_delta_sum = l.EpsilonDeltaSum }),
            }));
            return CliRunner.Ok;
        }
        Console.WriteLine($"copied {from.Display} to {to.Display}; verified:");
        Console.WriteLine("  rows: " + string.Join(", ", report.Tables.Select(t => $"{t.Table} {t.Rows.ToString(CultureInfo.InvariantCulture)}")));
        Console.WriteLine($"  adapters: {report.AdapterBlobs} stored ({report.AdapterBytes} bytes, SHA-256 {report.AdapterDigest[..16]}...) on both");
        Console.WriteLine(report.AuditHeadHash is null
            ? "  audit chain: empty on both"
            : $"  audit chain valid on the copy: {report.AuditEntries} entries, same signed head {report.AuditHeadHash}");
        foreach ((string population, long charges, double sum) in report.Ledger)
        {
            Console.WriteLine($"  ledger {population}: {charges} charges, epsilon_delta sum {sum.ToString("R", CultureInfo.InvariantCulture)} on both");
        }
        return CliRunner.Ok;
    }

    private static StateLocation Parse(string? value, string flag)
    {
        if (string.IsNullOrWhiteSpace(value))
        {
            throw new UsageException($"{flag} FILE|CONNECTION is required");
        }
        try
        {
            return StateLocation.Parse(value);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException($"{flag}: {ex.Message.Split(" (Parameter")[0].Replace("--state", flag, StringComparison.Ordinal)}");
        }
    }
}
