using System.Globalization;

namespace Federated.Aggregation.Privacy;

/// <summary>
/// A privacy plan that cannot be priced: names the field, the value and the allowed range. Callers map it to
/// InvalidArgument (gRPC) or exit code 2 (CLI). Derives from <see cref="ArgumentOutOfRangeException"/> so code that
/// already refuses out-of-range arguments refuses these too.
/// </summary>
public sealed class PrivacyPlanException : ArgumentOutOfRangeException
{
    /// <summary>Creates the refusal for one field.</summary>
    /// <param name="field">The plan field as the officer names it (snake_case, e.g. "clip_norm").</param>
    /// <param name="value">The refused value.</param>
    /// <param name="allowed">What would be accepted, e.g. "use 1..2^28".</param>
    public PrivacyPlanException(string field, object? value, string allowed)
        : base(field, value, allowed)
    {
        ArgumentException.ThrowIfNullOrEmpty(field);
        ArgumentException.ThrowIfNullOrEmpty(allowed);
        Field = field;
        Allowed = allowed;
    }

    /// <summary>The refused field.</summary>
    public string Field { get; }

    /// <summary>The allowed range or the fix, in words.</summary>
    public string Allowed { get; }

    /// <summary>"field value is invalid: allowed" without the BCL's "(Parameter ...)" suffix.</summary>
    public override string Message => $"{Field} {Format(ActualValue)} is invalid: {Allowed}";

    internal static string Format(object? value) => value switch
    {
        null => "(none)",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
