using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Federated.EdgeClient.Rounds;

/// <summary>
/// One state change of an edge client (connecting, registered, waiting, invited, declined, training, charged, uploading,
/// round_done, retrying, switched, stopped, failed): <see cref="Text"/> is the line for people, <see cref="ToJson"/> the object
/// `edge-client run --json` prints. Never carries data or update values.
/// </summary>
public sealed record EdgeEvent(string Event, string Text)
{
    public const string Connecting = "connecting";
    public const string Registered = "registered";
    public const string Waiting = "waiting";
    public const string Invited = "invited";
    public const string Declined = "declined";
    public const string Training = "training";
    public const string Charged = "charged";
    public const string Uploading = "uploading";
    public const string RoundDone = "round_done";
    public const string RoundFailed = "round_failed";
    public const string Retrying = "retrying";
    public const string Switched = "switched";
    public const string Skipped = "skipped";
    public const string Stopped = "stopped";
    public const string Failed = "failed";

    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        // Infinite worst-case epsilons (central noise) are written as the string "Infinity" rather than failing.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        // Lines for logs and scripts, never embedded in HTML: "Ctrl+C" stays readable.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public string? Name { get; init; }

    public string? Role { get; init; }

    public string? RunId { get; init; }

    public uint? Round { get; init; }

    public string? Rule { get; init; }

    public int? Step { get; init; }

    public int? Steps { get; init; }

    public double? Loss { get; init; }

    public double? FirstLoss { get; init; }

    public double? LastLoss { get; init; }

    public double? RunEpsilon { get; init; }

    public double? LifetimeEpsilon { get; init; }

    public double? WorstCaseRunEpsilon { get; init; }

    public double? Delta { get; init; }

    public ulong? UploadedBytes { get; init; }

    public double? RetryInSeconds { get; init; }

    /// <summary>With several --coordinator addresses: the one this event concerns (the one now serving, or the one that failed).</summary>
    public string? Coordinator { get; init; }

    /// <summary>On a switch: the coordinator that served rounds before (at first, the first one listed).</summary>
    public string? SwitchedFrom { get; init; }

    /// <summary>One JSON object on one line: "event" first, then the fields that are set, then the human line as "message".</summary>
    public string ToJson()
    {
        var fields = (JsonObject)JsonSerializer.SerializeToNode(this, s_json)!;
        var line = new JsonObject { ["event"] = Event };
        foreach ((string key, JsonNode? value) in fields.ToList())
        {
            if (key is not ("event" or "text"))
            {
                fields.Remove(key);
                line[key] = value;
            }
        }
        line["message"] = Text;
        return line.ToJsonString(s_json);
    }
}
