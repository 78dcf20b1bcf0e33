using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Federated.EdgeClient.Policy;

/// <summary>The noise mechanisms a round can use, as a data holder names them in policy.json.</summary>
public enum NoiseMechanismKind
{
    DistributedSkellam,
    DistributedDiscreteGaussian,
    CentralGaussian,
}

/// <summary>A policy file that cannot be used; the message names the key and the allowed range.</summary>
internal sealed class PolicyFileException(string message) : Exception(message);

/// <summary>
/// The data holder's own privacy policy (policy.json beside the client identity). The coordinator cannot override
/// it: every round manifest is checked against it, and the local ledger is charged against its budgets.
/// </summary>
public sealed record LocalPolicy
{
    public const string FileName = "policy.json";

    /// <summary>The delta at which this machine's epsilons are stated and accounted.</summary>
    public required double Delta { get; init; }

    /// <summary>Largest epsilon one run may spend on this machine's data.</summary>
    public required double MaxEpsilonPerRun { get; init; }

    /// <summary>Largest epsilon all runs together may ever spend on this machine's data.</summary>
    public required double MaxEpsilonLifetime { get; init; }

    /// <summary>Largest epsilon all runs together may spend on this machine's data in any 30 days (rolling); null: no such cap.</summary>
    public double? MaxEpsilonPer30Days { get; init; }

    /// <summary>
    /// Largest worst-case epsilon one run may spend: priced from this machine's own noise share alone, what is left if
    /// every other participant of its rounds is the coordinator's sybil (central noise: unbounded). Null: no cap.
    /// </summary>
    public double? MaxWorstCaseEpsilonPerRun { get; init; }

    /// <summary>Largest worst-case epsilon all runs together may ever spend (see <see cref="MaxWorstCaseEpsilonPerRun"/>); null: no cap.</summary>
    public double? MaxWorstCaseEpsilonLifetime { get; init; }

    /// <summary>
    /// Largest record-level (DP-SGD) epsilon one run may spend on any one record of this machine's data, at <see cref="Delta"/>,
    /// priced with this machine's own record count. Null: no cap, and record-only runs (no client-level noise) are declined.
    /// </summary>
    public double? MaxRecordEpsilon { get; init; }

    /// <summary>Largest record-level epsilon all runs together may ever spend on any one record (see <see cref="MaxRecordEpsilon"/>); null: no cap.</summary>
    public double? MaxRecordEpsilonLifetime { get; init; }

    /// <summary>Smallest SecAgg+ threshold t a round may use (on top of t > k/2, which every round must meet).</summary>
    public int MinThreshold { get; init; } = 2;

    /// <summary>Smallest noise multiplier z accepted.</summary>
    public required double MinNoiseMultiplier { get; init; }

    /// <summary>Mechanisms accepted; leaving out central_gaussian refuses rounds that trust the coordinator with noise.</summary>
    public required IReadOnlyList<NoiseMechanismKind> AllowedMechanisms { get; init; }

    /// <summary>LoRA target modules accepted (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).</summary>
    public required IReadOnlyList<string> AllowedTargetModules { get; init; }

    /// <summary>Largest LoRA rank accepted.</summary>
    public required int MaxRank { get; init; }

    /// <summary>Most rounds this machine takes part in within any 24 hours.</summary>
    public required int MaxRoundsPerDay { get; init; }

    /// <summary>SHA-256 (hex) of the only coordinator certificate this machine talks to; null pins nothing beyond the CA.</summary>
    public string? CoordinatorCertificateSha256 { get; init; }

    // Every projection name of a supported family (Phi-3's fused qkv_proj and gate_up_proj included).
    private static readonly IReadOnlyList<string> s_targetModules = Federated.Training.Lora.LoraSettings.AllProjections;

    /// <summary>Reads and validates a policy file.</summary>
    /// <exception cref="PolicyFileException">Missing file, bad JSON, unknown key, or a value out of range.</exception>
    public static LocalPolicy Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new PolicyFileException($"{path}: no local policy; write one (see docs/policy.example.json) before taking part in rounds");
        }
        PolicyJson? json;
        try
        {
            json = JsonSerializer.Deserialize(File.ReadAllText(path), PolicyJsonContext.Default.PolicyJson);
        }
        catch (JsonException ex)
        {
            throw new PolicyFileException(Describe(path, ex));
        }
        if (json is null)
        {
            throw new PolicyFileException($"{path}: empty policy");
        }
        return FromJson(json, path);
    }

    private static LocalPolicy FromJson(PolicyJson json, string path)
    {
        double Required(double? value, string key, double min, double max, bool minExclusive)
        {
            string range = $"{(minExclusive ? "(" : "[")}{min.ToString(CultureInfo.InvariantCulture)}, {max.ToString(CultureInfo.InvariantCulture)}]";
            if (value is not { } v)
            {
                throw new PolicyFileException($"{path}: {key} is required, a number in {range}");
            }
            if (double.IsNaN(v) || (minExclusive ? v <= min : v < min) || v > max)
            {
                throw new PolicyFileException($"{path}: {key} = {v.ToString(CultureInfo.InvariantCulture)} is outside {range}");
            }
            return v;
        }

        int RequiredInt(double? value, string key, int min, int max)
        {
            double v = Required(value, key, min, max, minExclusive: false);
            if (v != Math.Floor(v))
            {
                throw new PolicyFileException($"{path}: {key} = {v.ToString(CultureInfo.InvariantCulture)} must be a whole number");
            }
            return (int)v;
        }

        double delta = Required(json.Delta, "delta", 0, 0.1, minExclusive: true);
        double perRun = Required(json.MaxEpsilonPerRun, "max_epsilon_per_run", 0, 100, minExclusive: true);
        double lifetime = Required(json.MaxEpsilonLifetime, "max_epsilon_lifetime", 0, 1000, minExclusive: true);
        if (perRun > lifetime)
        {
            throw new PolicyFileException($"{path}: max_epsilon_per_run ({perRun}) exceeds max_epsilon_lifetime ({lifetime})");
        }
        double? Optional(double? value, string key, double max) => value is null ? null : Required(value, key, 0, max, minExclusive: true);
        double? per30Days = Optional(json.MaxEpsilonPer30Days, "max_epsilon_per_30_days", 1000);
        double? worstRun = Optional(json.MaxWorstCaseEpsilonPerRun, "max_worst_case_epsilon_per_run", 10_000);
        double? worstLifetime = Optional(json.MaxWorstCaseEpsilonLifetime, "max_worst_case_epsilon_lifetime", 100_000);
        if (worstRun is { } wr && worstLifetime is { } wl && wr > wl)
        {
            throw new PolicyFileException($"{path}: max_worst_case_epsilon_per_run ({wr}) exceeds max_worst_case_epsilon_lifetime ({wl})");
        }
        double? recordRun = Optional(json.MaxRecordEpsilon, "max_record_epsilon", 1000);
        double? recordLifetime = Optional(json.MaxRecordEpsilonLifetime, "max_record_epsilon_lifetime", 100_000);
        if (recordRun is { } rr && recordLifetime is { } rl && rr > rl)
        {
            throw new PolicyFileException($"{path}: max_record_epsilon ({rr}) exceeds max_record_epsilon_lifetime ({rl})");
        }
        int minThreshold = json.MinThreshold is null ? 2 : RequiredInt(json.MinThreshold, "min_threshold", 2, 1_000_000);
        double minNoise = Required(json.MinNoiseMultiplier, "min_noise_multiplier", 0, 100, minExclusive: false);
        int maxRank = RequiredInt(json.MaxRank, "max_rank", 1, 1024);
        int maxRounds = RequiredInt(json.MaxRoundsPerDay, "max_rounds_per_day", 0, 100_000);

        if (json.AllowedMechanisms is not { Length: > 0 } mechanisms)
        {
            throw new PolicyFileException($"{path}: allowed_mechanisms is required: one or more of distributed_skellam, distributed_discrete_gaussian, central_gaussian");
        }
        var allowed = new List<NoiseMechanismKind>();
        foreach (string name in mechanisms)
        {
            allowed.Add(ParseMechanism(name) ?? throw new PolicyFileException(
                $"{path}: allowed_mechanisms has unknown '{name}'; use distributed_skellam, distributed_discrete_gaussian or central_gaussian"));
        }
        if (json.AllowedTargetModules is not { Length: > 0 } modules)
        {
            throw new PolicyFileException($"{path}: allowed_target_modules is required: one or more of {string.Join(", ", s_targetModules)}");
        }
        string? unknown = modules.FirstOrDefault(m => !s_targetModules.Contains(m, StringComparer.Ordinal));
        if (unknown is not null)
        {
            throw new PolicyFileException($"{path}: allowed_target_modules has unknown '{unknown}'; use {string.Join(", ", s_targetModules)}");
        }
        string? pin = json.CoordinatorCertificateSha256?.Replace(":", "", StringComparison.Ordinal).ToLowerInvariant();
        if (pin is not null && (pin.Length != 64 || !pin.All(char.IsAsciiHexDigitLower)))
        {
            throw new PolicyFileException($"{path}: coordinator_certificate_sha256 must be 64 hex digits (the certificate's SHA-256)");
        }

        return new LocalPolicy
        {
            Delta = delta,
            MaxEpsilonPerRun = perRun,
            MaxEpsilonLifetime = lifetime,
            MaxEpsilonPer30Days = per30Days,
            MaxWorstCaseEpsilonPerRun = worstRun,
            MaxWorstCaseEpsilonLifetime = worstLifetime,
            MaxRecordEpsilon = recordRun,
            MaxRecordEpsilonLifetime = recordLifetime,
            MinThreshold = minThreshold,
            MinNoiseMultiplier = minNoise,
            AllowedMechanisms = allowed.Distinct().ToArray(),
            AllowedTargetModules = modules.Distinct(StringComparer.Ordinal).ToArray(),
            MaxRank = maxRank,
            MaxRoundsPerDay = maxRounds,
            CoordinatorCertificateSha256 = pin,
        };
    }

    /// <summary>The file's words for a JSON error: file:line:column, the key, and no .NET type names.</summary>
    internal static string Describe(string path, JsonException ex)
    {
        string where = ex.LineNumber is { } line ? $"{path}:{line + 1}:{(ex.BytePositionInLine ?? 0) + 1}" : path;
        string key = ex.Path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : "";
        if (ex.Message.Contains("could not be mapped to any .NET member", StringComparison.Ordinal))
        {
            return $"{where}: unknown key '{key}'; the keys are {string.Join(", ", s_keys)}";
        }
        if (ex.Message.Contains("could not be converted to", StringComparison.Ordinal))
        {
            return $"{where}: {(key.Length > 0 ? $"'{key}' has" : "a value of")} the wrong type (numbers for limits, a list of strings for allowed_*, a string for the pin)";
        }
        return $"{where}: {Federated.Training.Data.JsonlDataset.JsonMessage(ex)}";
    }

    private static readonly string[] s_keys =
    [
        "delta", "max_epsilon_per_run", "max_epsilon_lifetime", "max_epsilon_per_30_days", "max_worst_case_epsilon_per_run",
        "max_worst_case_epsilon_lifetime", "min_threshold", "min_noise_multiplier", "allowed_mechanisms", "allowed_target_modules",
        "max_rank", "max_rounds_per_day", "coordinator_certificate_sha256", "max_record_epsilon", "max_record_epsilon_lifetime",
    ];

    internal static NoiseMechanismKind? ParseMechanism(string name) => name switch
    {
        "distributed_skellam" => NoiseMechanismKind.DistributedSkellam,
        "distributed_discrete_gaussian" => NoiseMechanismKind.DistributedDiscreteGaussian,
        "central_gaussian" => NoiseMechanismKind.CentralGaussian,
        _ => null,
    };

    internal static string MechanismName(NoiseMechanismKind kind) => kind switch
    {
        NoiseMechanismKind.DistributedSkellam => "distributed_skellam",
        NoiseMechanismKind.DistributedDiscreteGaussian => "distributed_discrete_gaussian",
        _ => "central_gaussian",
    };

    internal sealed class PolicyJson
    {
        public double? Delta { get; init; }

        public double? MaxEpsilonPerRun { get; init; }

        public double? MaxEpsilonLifetime { get; init; }

        public double? MinNoiseMultiplier { get; init; }

        [JsonPropertyName("max_epsilon_per_30_days")]
        public double? MaxEpsilonPer30Days { get; init; }

        public double? MaxWorstCaseEpsilonPerRun { get; init; }

        public double? MaxWorstCaseEpsilonLifetime { get; init; }

        public double? MinThreshold { get; init; }

        public double? MaxRecordEpsilon { get; init; }

        public double? MaxRecordEpsilonLifetime { get; init; }

        public string[]? AllowedMechanisms { get; init; }

        public string[]? AllowedTargetModules { get; init; }

        public double? MaxRank { get; init; }

        public double? MaxRoundsPerDay { get; init; }

        public string? CoordinatorCertificateSha256 { get; init; }
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow, ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true)]
[JsonSerializable(typeof(LocalPolicy.PolicyJson))]
internal sealed partial class PolicyJsonContext : JsonSerializerContext;
