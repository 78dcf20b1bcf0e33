using System.ComponentModel;
using System.Text.Json;
using Federated.EdgeClient.Scrubbing;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>`edge-client scrub`: previews (and optionally writes) the PII scrubbing applied before training.</summary>
internal sealed class ScrubCommand : Command<ScrubCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--data <FILE>")]
        [Description("JSONL data file to scrub.")]
        public string? Data { get; init; }

        [CommandOption("--out <FILE>")]
        [Description("Write the scrubbed JSONL here (the input is never changed).")]
        public string? Out { get; init; }

        [CommandOption("--pattern <LABEL=REGEX>")]
        [Description("A data holder's own pattern, e.g. MRN=MRN-\\d{7}; repeatable.")]
        public string[] Patterns { get; init; } = [];

        [CommandOption("--names <FILE>")]
        [Description("A file of names to mask, one per line.")]
        public string? Names { get; init; }

        [CommandOption("--json")]
        [Description("Print one JSON object instead of tables.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        if (string.IsNullOrEmpty(settings.Data))
        {
            throw new UsageException("--data is required: the JSONL file to scrub");
        }
        if (!File.Exists(settings.Data))
        {
            throw new UsageException($"--data: file not found: {settings.Data}");
        }
        if (settings.Names is not null && !File.Exists(settings.Names))
        {
            throw new UsageException($"--names: file not found: {settings.Names}");
        }
        if (settings.Out is not null && Path.GetFullPath(settings.Out) == Path.GetFullPath(settings.Data))
        {
            throw new UsageException("--out must differ from --data: the original file is never overwritten");
        }

        var patterns = new List<CustomPiiPattern>();
        foreach (string pattern in settings.Patterns)
        {
            int eq = pattern.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || eq == pattern.Length - 1)
            {
                throw new UsageException($"--pattern '{pattern}': expected LABEL=REGEX");
            }
            patterns.Add(new CustomPiiPattern(pattern[..eq], pattern[(eq + 1)..]));
        }

        PiiScrubber scrubber;
        try
        {
            scrubber = new PiiScrubber(patterns, settings.Names is null ? null : File.ReadAllLines(settings.Names));
        }
        catch (ArgumentException ex)
        {
            throw new UsageException($"--pattern: {ex.Message.Split(" (Parameter")[0]}");
        }

        ScrubReport report;
        string? temp = settings.Out is null ? null : settings.Out + ".tmp";
        try
        {
            using (StreamWriter? writer = temp is null ? null : new StreamWriter(temp))
            {
                report = JsonlScrubber.Scrub(scrubber, settings.Data, writer, cancellationToken);
            }
            if (temp is not null)
            {
                File.Move(temp, settings.Out!, overwrite: true);
            }
        }
        catch (InvalidDataException ex)
        {
            throw new UsageException(ex.Message);
        }
        finally
        {
            if (temp is not null && File.Exists(temp))
            {
                File.Delete(temp);
            }
        }

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                data = settings.Data,
                @out = settings.Out,
                lines = report.Lines,
                lines_changed = report.LinesChanged,
                total = report.Total,
                counts = report.Counts,
                examples = report.Examples,
            }));
            return CliRunner.Ok;
        }

        var table = new Table().AddColumn("type").AddColumn(new TableColumn("found").RightAligned()).AddColumn("examples (masked)");
        foreach ((string type, int count) in report.Counts)
        {
            table.AddRow(Markup.Escape(type), count.ToString(System.Globalization.CultureInfo.InvariantCulture),
                Markup.Escape(string.Join("\n", report.Examples[type])));
        }
        AnsiConsole.MarkupLine($"Scrubbed [bold]{report.Lines}[/] lines of {Markup.Escape(settings.Data)}: {report.Total} items in {report.LinesChanged} lines.");
        if (report.Total > 0)
        {
            AnsiConsole.Write(table);
        }
        if (settings.Out is not null)
        {
            AnsiConsole.MarkupLine($"Wrote {Markup.Escape(settings.Out)}.");
        }
        return CliRunner.Ok;
    }
}
