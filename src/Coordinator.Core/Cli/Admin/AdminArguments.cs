using System.Globalization;

namespace Federated.Coordinator.Cli;

/// <summary>Client-side checks of the admin flags: one line naming the flag and its allowed range, exit code 2.</summary>
internal static class AdminArguments
{
    public const int MaxPopulationLength = 64;

    public static double Number(string? text, string flag, string range, Func<double, bool> allowed) =>
        PrivacyArguments.Number(text, flag, range, allowed);

    public static double? OptionalNumber(string? text, string flag, string range, Func<double, bool> allowed) =>
        text is null ? null : Number(text, flag, range, allowed);

    public static uint Integer(string? text, string flag, uint min, uint max)
    {
        string range = $"an integer in {min}..{max}";
        if (text is null)
        {
            throw new UsageException($"{flag} is required: {range}");
        }
        if (!uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out uint value) || value < min || value > max)
        {
            throw new UsageException($"{flag} must be {range}, got '{text}'");
        }
        return value;
    }

    public static uint? OptionalInteger(string? text, string flag, uint min, uint max) =>
        text is null ? null : Integer(text, flag, min, max);

    /// <summary>A population name as the coordinator accepts it; empty means the default population.</summary>
    public static string Population(string? text)
    {
        if (text is null)
        {
            return "";
        }
        if (text.Length is 0 or > MaxPopulationLength || !text.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            throw new UsageException($"--population must be 1-{MaxPopulationLength} characters of A-Z a-z 0-9 . _ -, got '{text}'");
        }
        return text;
    }

    /// <summary>A run id as the coordinator issues it (checked before it is sent or printed).</summary>
    public static string RunId(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            throw new UsageException("RUN_ID is required");
        }
        try
        {
            Rounds.RunExporter.ValidateRunId(text);
        }
        catch (ArgumentException)
        {
            throw new UsageException($"RUN_ID must be 1-64 characters of A-Z a-z 0-9 - _ (as 'run start' prints it), got '{(text.Length > 80 ? text[..80] + "..." : text)}'");
        }
        return text;
    }
}
