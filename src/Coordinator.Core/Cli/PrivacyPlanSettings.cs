using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The plan flags both privacy commands share; values stay text so errors can name the flag and its range.</summary>
internal abstract class PrivacyPlanSettings : CommandSettings
{
    [CommandOption("--delta <D>")]
    public string? Delta { get; init; }

    [CommandOption("--sampling-rate <Q>")]
    public string? SamplingRate { get; init; }

    [CommandOption("--rounds <T>")]
    public string? Rounds { get; init; }

    [CommandOption("--accountant <rdp|pld>")]
    public string? Accountant { get; init; }

    /// <summary>Prices what a run is charged (distributed Skellam or central discrete Gaussian) instead of the plain subsampled Gaussian.</summary>
    [CommandOption("--mechanism <distributed|central>")]
    public string? Mechanism { get; init; }

    [CommandOption("--dimension <D>")]
    public string? Dimension { get; init; }

    // The names run start uses for the same plan values (--clients and --threshold kept as aliases).
    [CommandOption("--clients-per-round|--clients <N>")]
    public string? Clients { get; init; }

    [CommandOption("--min-survivors|--threshold <T>")]
    public string? Threshold { get; init; }

    [CommandOption("--bits <B>")]
    public string? Bits { get; init; }

    [CommandOption("--clip-norm <C>")]
    public string? ClipNorm { get; init; }

    [CommandOption("--json")]
    public bool Json { get; init; }
}
