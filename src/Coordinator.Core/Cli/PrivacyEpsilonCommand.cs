using System.ComponentModel;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The officer's calculator: epsilon after a number of rounds of a run's mechanism (--mechanism) or of the subsampled Gaussian.</summary>
internal sealed class PrivacyEpsilonCommand : Command<PrivacyEpsilonCommand.Settings>
{
    public sealed class Settings : PrivacyPlanSettings
    {
        [CommandOption("--noise-multiplier <Z>")]
        [Description("Noise multiplier z, > 0: noise standard deviation over the clip norm. Required.")]
        public string? NoiseMultiplier { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        double z = PrivacyArguments.NoiseMultiplier(settings.NoiseMultiplier);
        PrivacyQuote quote = PrivacyQuote.ForNoise(settings, z);
        quote.Print(settings.Json, $"epsilon = {quote.Spent.Epsilon:F6} at delta = {PrivacyArguments.Format(quote.Delta)}");
        return CliRunner.Ok;
    }
}
