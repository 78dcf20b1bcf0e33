using System.ComponentModel;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The officer's planner: the smallest noise multiplier that keeps a plan within an (epsilon, delta) target.</summary>
internal sealed class PrivacyNoiseCommand : Command<PrivacyNoiseCommand.Settings>
{
    public sealed class Settings : PrivacyPlanSettings
    {
        // --target-epsilon as on run start (--epsilon kept: budget set --epsilon is the budget itself, this is a target).
        [CommandOption("--target-epsilon|--epsilon <E>")]
        [Description("Target epsilon, > 0: the smallest noise multiplier that stays within it is printed; alias --epsilon. Required.")]
        public string? Epsilon { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        double target = PrivacyArguments.Epsilon(settings.Epsilon);
        PrivacyQuote quote = PrivacyQuote.ForTarget(settings, target);
        quote.Print(settings.Json, $"noise multiplier = {quote.NoiseMultiplier:F6} gives epsilon = {quote.Spent.Epsilon:F6} <= {PrivacyArguments.Format(target)} " +
            $"at delta = {PrivacyArguments.Format(quote.Delta)}");
        return CliRunner.Ok;
    }
}
