using Federated.Aggregation.Privacy;
using Federated.Protos.V1;

namespace Federated.Wire;

/// <summary>The run plan's privacy_unit as the CLI, the JSON outputs and provenance.json name it: client, record or both.</summary>
public static class PrivacyUnitWire
{
    /// <summary>"client" (also for UNSPECIFIED: plans and manifests from before the field), "record" or "both".</summary>
    public static string Name(PrivacyUnit unit) => unit switch
    {
        PrivacyUnit.Unspecified or PrivacyUnit.Client => PrivacyUnitNames.Client,
        PrivacyUnit.Record => PrivacyUnitNames.Record,
        PrivacyUnit.Both => PrivacyUnitNames.Both,
        _ => throw new ArgumentOutOfRangeException(nameof(unit), unit, "unknown privacy unit"),
    };

    /// <summary>Parses client, record or both; null for anything else.</summary>
    public static PrivacyUnit? Parse(string? name) => name switch
    {
        PrivacyUnitNames.Client => PrivacyUnit.Client,
        PrivacyUnitNames.Record => PrivacyUnit.Record,
        PrivacyUnitNames.Both => PrivacyUnit.Both,
        _ => null,
    };

    /// <summary>Whether every edge trains with DP-SGD and charges its record-level ledger (record or both).</summary>
    public static bool HasRecordLevel(PrivacyUnit unit) => unit is PrivacyUnit.Record or PrivacyUnit.Both;

    /// <summary>Whether the client-level mechanism noises the aggregate and the client-level budget is charged (client or both).</summary>
    public static bool HasClientLevel(PrivacyUnit unit) => unit is PrivacyUnit.Unspecified or PrivacyUnit.Client or PrivacyUnit.Both;
}
