using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.Rounds;

namespace Federated.Coordinator.Cli;

/// <summary>
/// What the officer's two privacy commands compute and print, from one place: with --mechanism, the
/// <see cref="PrivacyPlan"/> a run of those parameters is charged (the coordinator's own pricing, at replace-one,
/// no amplification); without it, the plain Poisson-subsampled Gaussian of one record of a secret sample (DP-SGD's
/// calculation), by the RDP or PLD accountant.
/// </summary>
/// <param name="Plan">The mechanism's plan; null for the plain subsampled Gaussian.</param>
internal sealed record PrivacyQuote(
    PrivacyAccountantKind Accountant, PrivacySpent Spent, double Delta, double NoiseMultiplier, double SamplingRate, long Rounds, PrivacyPlan? Plan)
{
    private const string RecordUnit = "record";

    /// <summary>The epsilon of the flags' plan at noise multiplier <paramref name="noiseMultiplier"/>.</summary>
    public static PrivacyQuote ForNoise(PrivacyPlanSettings settings, double noiseMultiplier)
    {
        (PrivacyAccountantKind kind, long rounds, double delta, double q) = Common(settings);
        if (MechanismParameters(settings, noiseMultiplier, rounds, delta, q) is { } parameters)
        {
            PrivacyPlan plan = Priced(() => PrivacyPlan.Create(parameters));
            return new PrivacyQuote(kind, plan.Epsilon, delta, noiseMultiplier, q, rounds, plan);
        }
        try
        {
            return new PrivacyQuote(kind, PrivacyPlanner.Epsilon(kind, noiseMultiplier, q, rounds, delta), delta, noiseMultiplier, q, rounds, null);
        }
        catch (ArgumentOutOfRangeException ex) when (ex.ParamName == "roundedUpper")
        {
            // The PLD grid grows like 1/z^2; a tiny noise multiplier is a plan to change, not a crash.
            throw new UsageException($"--noise-multiplier {PrivacyArguments.Format(noiseMultiplier)} is too small for the PLD accountant's grid; use --accountant rdp");
        }
    }

    /// <summary>The smallest noise multiplier whose epsilon meets <paramref name="target"/>, and its epsilon.</summary>
    public static PrivacyQuote ForTarget(PrivacyPlanSettings settings, double target)
    {
        (PrivacyAccountantKind kind, long rounds, double delta, double q) = Common(settings);
        if (MechanismParameters(settings, 1.0, rounds, delta, q) is { } parameters)
        {
            double z = Priced(() => PrivacyPlan.NoiseForEpsilon(parameters, target));
            return ForNoise(settings, z);
        }
        double noise;
        try
        {
            noise = PrivacyPlanner.NoiseForEpsilon(kind, target, delta, q, rounds);
        }
        catch (ArgumentOutOfRangeException ex) when (ex.ParamName == "targetEpsilon")
        {
            // The target cannot be planned (e.g. PLD below its smallest supported noise): a fixable usage problem.
            throw new UsageException($"--target-epsilon {PrivacyArguments.Format(target)}: {ex.Message.Split(" (Parameter")[0]}");
        }
        return ForNoise(settings, noise);
    }

    /// <summary>One JSON object: the existing keys, then what the epsilon is stated for and, with --mechanism, the calibrated plan.</summary>
    public string Json()
    {
        var result = new Dictionary<string, object>
        {
            ["accountant"] = PrivacyArguments.Name(Accountant),
            ["epsilon"] = Spent.Epsilon,
            ["delta"] = Delta,
            ["noise_multiplier"] = NoiseMultiplier,
            ["sampling_rate"] = SamplingRate,
            ["rounds"] = Rounds,
            ["mechanism"] = Plan?.MechanismName ?? "subsampled_gaussian",
            ["privacy_unit"] = Plan?.PrivacyUnit ?? RecordUnit,
            ["adjacency"] = Plan?.AdjacencyName ?? PrivacyUnitNames.Name(Adjacency.AddRemove),
        };
        if (Spent.Order is double order)
        {
            result["order"] = order;
        }
        if (Plan is { } plan)
        {
            PrivacyPlanParameters p = plan.Parameters;
            result["dimension"] = p.Dimension;
            result["clients"] = p.Clients;
            result["threshold"] = p.Threshold;
            result["bits"] = p.Bits;
            result["clip_norm"] = p.ClipNorm;
            result["priced_sampling_rate"] = plan.PricedSamplingRate;
            result["scale"] = plan.Scale;
            result["l1_sensitivity"] = plan.L1Sensitivity;
            result["l2_sensitivity"] = plan.L2Sensitivity;
            result["noise_variance"] = plan.NoiseVariance;
        }
        return JsonSerializer.Serialize(result);
    }

    /// <summary>What the epsilon is stated for and how it was priced, in words (the parenthesis after a human headline).</summary>
    public string Description()
    {
        string order = Spent.Order is double a ? $", best order {PrivacyArguments.Format(a)}" : "";
        string accountant = PrivacyArguments.Name(Accountant) + order;
        if (Plan is not { } plan)
        {
            return $"{accountant}; {RecordUnit}-level, add-remove, a secret Poisson sample: the subsampled Gaussian of DP-SGD, not a run's price (see --mechanism); " +
                $"noise multiplier {PrivacyArguments.Format(NoiseMultiplier)}, sampling rate {PrivacyArguments.Format(SamplingRate)}, {Rounds} rounds";
        }
        PrivacyPlanParameters p = plan.Parameters;
        return $"{accountant}; {plan.MechanismName}, {plan.PrivacyUnit}-level, {plan.AdjacencyName}, no amplification; noise multiplier {PrivacyArguments.Format(NoiseMultiplier)}, " +
            $"{p.Clients} clients, threshold {p.Threshold}, {p.Bits}-bit ring, clip norm {PrivacyArguments.Format(p.ClipNorm)}, dimension {p.Dimension}, {Rounds} rounds";
    }

    /// <summary>With --mechanism, the calibrated quantities the epsilon comes from (integer units), so anyone can recompute it; null otherwise.</summary>
    public string? Calibration() => Plan is { } plan
        ? $"calibrated plan (integer units): scale {plan.Scale:G9}, L1 sensitivity {plan.L1Sensitivity:G9}, L2 sensitivity {plan.L2Sensitivity:G9}, noise variance {plan.NoiseVariance:G9}"
        : null;

    /// <summary>Prints the quote: one JSON object, or the headline with its description and, with --mechanism, the calibration.</summary>
    public void Print(bool json, string headline)
    {
        if (json)
        {
            Console.WriteLine(Json());
            return;
        }
        Console.WriteLine($"{headline} ({Description()})");
        if (Calibration() is { } calibration)
        {
            Console.WriteLine(calibration);
        }
    }

    private static (PrivacyAccountantKind Kind, long Rounds, double Delta, double SamplingRate) Common(PrivacyPlanSettings settings)
    {
        PrivacyAccountantKind kind = PrivacyArguments.Accountant(settings.Accountant);
        bool mechanism = settings.Mechanism is not null;
        if (mechanism && kind == PrivacyAccountantKind.Pld)
        {
            throw new UsageException("--accountant pld cannot price --mechanism plans: this PLD accountant has no discrete-noise or replace-one variant; use --accountant rdp");
        }
        if (!mechanism && new[] { ("--dimension", settings.Dimension), ("--clients-per-round", settings.Clients), ("--min-survivors", settings.Threshold), ("--bits", settings.Bits), ("--clip-norm", settings.ClipNorm) }
            .FirstOrDefault(f => f.Item2 is not null) is { Item1: { } flag })
        {
            throw new UsageException($"{flag} needs --mechanism distributed|central (it describes the plan a run is charged for)");
        }
        long rounds = PrivacyArguments.Rounds(settings.Rounds);
        double delta = PrivacyArguments.Delta(settings.Delta);
        // A run's rate sizes nothing in its price (the sample is public); without a mechanism the rate is the calculation.
        double q = mechanism && settings.SamplingRate is null ? 0 : PrivacyArguments.SamplingRate(settings.SamplingRate);
        return (kind, rounds, delta, q);
    }

    private static PrivacyPlanParameters? MechanismParameters(PrivacyPlanSettings settings, double z, long rounds, double delta, double q)
    {
        if (settings.Mechanism is null)
        {
            return null;
        }
        PrivacyMechanism mechanism = settings.Mechanism switch
        {
            "distributed" => PrivacyMechanism.DistributedSkellam,
            "central" => PrivacyMechanism.CentralGaussian,
            _ => throw new UsageException($"--mechanism must be distributed or central, got '{settings.Mechanism}'"),
        };
        int dimension = PrivacyArguments.Integer(settings.Dimension, "--dimension", "the number of values in one client's update (the lora_B size)");
        int clients = PrivacyArguments.Integer(settings.Clients, "--clients-per-round", "the most clients summed in one round (clients per round, or the 1000 cap with --sampling-rate)");
        // Defaults as a run gets them: about two thirds of the clients, the coordinator's 32-bit ring, clip norm 1.
        int threshold = settings.Threshold is null ? RunPlanValidation.DefaultThreshold(clients) : PrivacyArguments.Integer(settings.Threshold, "--min-survivors", "the SecAgg+ threshold");
        int bits = settings.Bits is null ? RunPricing.RingBits : PrivacyArguments.Integer(settings.Bits, "--bits", "the ring's bit width");
        double clip = settings.ClipNorm is null ? 1.0 : PrivacyArguments.Number(settings.ClipNorm, "--clip-norm", "> 0", v => v > 0);
        return new PrivacyPlanParameters(mechanism, dimension, clients, threshold, bits, clip, z, rounds, delta, SamplingRate: q);
    }

    // A plan PrivacyPlan refuses is a usage error naming the flag, the value and the range.
    private static T Priced<T>(Func<T> price)
    {
        try
        {
            return price();
        }
        catch (PrivacyPlanException ex)
        {
            string flag = ex.Field switch
            {
                "target_epsilon" => "--target-epsilon",
                "threshold" or "min_survivors" => "--min-survivors",
                "clients" or "clients_per_round" => "--clients-per-round",
                "clip_norm" => "--clip-norm",
                "noise_multiplier" => "--noise-multiplier",
                "sampling_rate" => "--sampling-rate",
                _ => "--" + ex.Field,
            };
            throw new UsageException($"{flag} {Convert.ToString(ex.ActualValue, CultureInfo.InvariantCulture)} is invalid: {ex.Allowed}");
        }
    }
}
