using System.Text.Json;
using Federated.Aggregation.Privacy;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The officer's planner: the smallest noise multiplier that keeps a plan within an (epsilon, delta) target.</summary>
internal sealed class PrivacyNoiseCommand : Command<PrivacyNoiseCommand.Settings>
{
    public sealed class Settings : PrivacyPlanSettings
    {
        [CommandOption("--epsilon <E>")]
        public string? Epsilon { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        double target = PrivacyArguments.Epsilon(settings.Epsilon);
        double delta = PrivacyArguments.Delta(settings.Delta);
        double q = PrivacyArguments.SamplingRate(settings.SamplingRate);
        long rounds = PrivacyArguments.Rounds(settings.Rounds);
        PrivacyAccountantKind kind = PrivacyArguments.Accountant(settings.Accountant);

        double z;
        try
        {
            z = PrivacyPlanner.NoiseForEpsilon(kind, target, delta, q, rounds);
        }
        catch (ArgumentOutOfRangeException ex) when (ex.ParamName == "targetEpsilon")
        {
            // The target cannot be planned (e.g. PLD below its smallest supported noise): a fixable usage problem.
            throw new UsageException($"--epsilon {PrivacyArguments.Format(target)}: {ex.Message.Split(" (Parameter")[0]}");
        }
        PrivacySpent spent = PrivacyPlanner.Epsilon(kind, z, q, rounds, delta);
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
            Console.WriteLine($"noise multiplier = {z:F6} gives epsilon = {spent.Epsilon:F6} <= {PrivacyArguments.Format(target)} at delta = {PrivacyArguments.Format(delta)} " +
                $"({accountant}; sampling rate {PrivacyArguments.Format(q)}, {rounds} rounds)");
        }
        return CliRunner.Ok;
    }
}
