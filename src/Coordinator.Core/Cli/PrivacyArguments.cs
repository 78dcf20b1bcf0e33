using System.Globalization;
using Federated.Aggregation.Privacy;

namespace Federated.Coordinator.Cli;

/// <summary>Parsing and validation of the privacy commands' flags: one clear line per mistake, exit code 2.</summary>
internal static class PrivacyArguments
{
    public static double Number(string? text, string flag, string range, Func<double, bool> allowed)
    {
        if (text is null)
        {
            throw new UsageException($"{flag} is required: a number {range}");
        }
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
        {
            throw new UsageException($"{flag} must be a number {range}, got '{text}'");
        }
        if (!allowed(value))
        {
            throw new UsageException($"{flag} must be {range}, got {text}");
        }
        return value;
    }

    public static long Rounds(string? text)
    {
        const string flag = "--rounds", range = "an integer >= 1";
        if (text is null)
        {
            throw new UsageException($"{flag} is required: {range}");
        }
        if (!long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long value))
        {
            throw new UsageException($"{flag} must be {range}, got '{text}'");
        }
        if (value < 1)
        {
            throw new UsageException($"{flag} must be {range}, got {text}");
        }
        return value;
    }

    /// <summary>An integer flag; its range is checked where the plan is priced, which names it.</summary>
    public static int Integer(string? text, string flag, string what)
    {
        if (text is null)
        {
            throw new UsageException($"{flag} is required with --mechanism: {what}");
        }
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
        {
            throw new UsageException($"{flag} must be an integer ({what}), got '{text}'");
        }
        return value;
    }

    public static double NoiseMultiplier(string? text) => Number(text, "--noise-multiplier", "> 0", v => v > 0);

    public static double SamplingRate(string? text) => Number(text, "--sampling-rate", "in (0, 1]", v => v > 0 && v <= 1);

    public static double Delta(string? text) => Number(text, "--delta", "in (0, 1)", v => v > 0 && v < 1);

    public static double Epsilon(string? text) => Number(text, "--target-epsilon", "> 0", v => v > 0);

    public static PrivacyAccountantKind Accountant(string? text) => text switch
    {
        null or "rdp" => PrivacyAccountantKind.Rdp,
        "pld" => PrivacyAccountantKind.Pld,
        _ => throw new UsageException($"--accountant must be rdp or pld, got '{text}'"),
    };

    public static string Name(PrivacyAccountantKind kind) => kind == PrivacyAccountantKind.Pld ? "pld" : "rdp";

    public static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);
}
