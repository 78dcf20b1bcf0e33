using System.ComponentModel;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The plan flags both privacy commands share; values stay text so errors can name the flag and its range.</summary>
internal abstract class PrivacyPlanSettings : CommandSettings
{
    [CommandOption("--delta <D>")]
    [Description("The delta epsilon is stated at, in (0, 1). Required.")]
    public string? Delta { get; init; }

    [CommandOption("--sampling-rate <Q>")]
    [Description("Poisson sampling rate q in (0, 1]]. Required without --mechanism (the secret sample of DP-SGD); with --mechanism it prices nothing (a run's sample is public).")]
    public string? SamplingRate { get; init; }

    [CommandOption("--rounds <T>")]
    [Description("Rounds (or DP-SGD steps) T, an integer >= 1. Required.")]
    public string? Rounds { get; init; }

    [CommandOption("--accountant <rdp|pld>")]
    [Description("Privacy accountant: rdp (Renyi DP) or pld (privacy loss distribution; not with --mechanism) (default: rdp).")]
    public string? Accountant { get; init; }

    /// <summary>Prices what a run is charged (distributed Skellam or central discrete Gaussian) instead of the plain subsampled Gaussian.</summary>
    [CommandOption("--mechanism <distributed|central>")]
    [Description("Price what a run is charged: distributed (Skellam noise added by the clients) or central (Gaussian added by the coordinator). Without it: the plain subsampled Gaussian of one record.")]
    public string? Mechanism { get; init; }

    [CommandOption("--dimension <D>")]
    [Description("Values in one client's update (the lora_B size). Required with --mechanism.")]
    public string? Dimension { get; init; }

    // The names run start uses for the same plan values (--clients and --threshold kept as aliases).
    [CommandOption("--clients-per-round|--clients <N>")]
    [Description("Most clients summed in one round (clients per round, or the 1000 cap with --sampling-rate); alias --clients. Required with --mechanism.")]
    public string? Clients { get; init; }

    [CommandOption("--min-survivors|--threshold <T>")]
    [Description("SecAgg+ threshold t: fewest surviving clients a round releases with; alias --threshold. With --mechanism (default: about two thirds of --clients-per-round, at least 2, as run start).")]
    public string? Threshold { get; init; }

    [CommandOption("--bits <B>")]
    [Description("Bit width of the secure-aggregation ring. With --mechanism (default: 32, the coordinator's ring).")]
    public string? Bits { get; init; }

    [CommandOption("--clip-norm <C>")]
    [Description("L2 norm each client's update is clipped to, > 0. With --mechanism (default: 1).")]
    public string? ClipNorm { get; init; }

    [CommandOption("--json")]
    [Description("Print one JSON object instead of text.")]
    public bool Json { get; init; }
}
