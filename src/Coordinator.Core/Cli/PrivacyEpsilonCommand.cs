using System.Text.Json;
using Federated.Aggregation.Privacy;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The officer's calculator: epsilon after a number of rounds of the subsampled Gaussian mechanism.</summary>
internal sealed class PrivacyEpsilonCommand : Command<PrivacyEpsilonCommand.Settings>
{
    public sealed class Settings : PrivacyPlanSettings
    {
        [CommandOption("--noise-multiplier <Z>")]
        public string? NoiseMultiplier { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        double z = PrivacyArguments.NoiseMultiplier(settings.NoiseMultiplier);
        double q = PrivacyArguments.SamplingRate(settings.SamplingRate);
        long rounds = PrivacyArguments.Rounds(settings.Rounds);
        double delta = PrivacyArguments.Delta(settings.Delta);
        PrivacyAccountantKind kind = PrivacyArguments.Accountant(settings.Accountant);

        PrivacySpent spent;
        try
        {
            spent = PrivacyPlanner.Epsilon(kind, z, q, rounds, delta);
        }
        catch (ArgumentOutOfRangeException ex) when (ex.ParamName == "roundedUpper")
        {
            // The PLD grid grows like 1/z^2; a tiny noise multiplier is a plan to change, not a crash.
            throw new UsageException($"--noise-multiplier {settings.NoiseMultiplier} is too small for the PLD accountant's grid; use --accountant rdp");
        }
        string accountant = PrivacyArguments.Name(kind);
        if (settings.Json)
        {
            var result = new Dictionary<string, object>
            {
                ["accountant"] = accountant,
                ["epsilon"] = spent.Epsilon,
                ["delta"] = delta,
                ["noise_multiplier"] = z,
                ["sampling_rate"] = q,
                ["rounds"] = rounds,
            };
            if (spent.Order is double order)
            {
                result["order"] = order;
            }
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            string order = spent.Order is double a ? $", best order {PrivacyArguments.Format(a)}" : "";
            Console.WriteLine($"epsilon = {spent.Epsilon:F6} at delta = {PrivacyArguments.Format(delta)} ({accountant}{order}; " +
                $"noise multiplier {PrivacyArguments.Format(z)}, sampling rate {PrivacyArguments.Format(q)}, {rounds} rounds)");
        }
        return CliRunner.Ok;
    }
}
