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

    [CommandOption("--json")]
    public bool Json { get; init; }
}
