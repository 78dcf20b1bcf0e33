using System.ComponentModel;
using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Coordinator.Audit;
using Federated.Protos.V1;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// Engineer or officer: a slice of the audit trail. The slice is checked as it arrives: every entry's hash, the links
/// between consecutive entries and, when the slice reaches the head, the head signature against the key of the
/// coordinator's TLS certificate. A broken chain prints what is wrong and exits 1.
/// </summary>
internal sealed class AuditShowCommand : AsyncCommand<AuditShowCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--from <N>")]
        [Description("First entry to show, by sequence number (default: 1).")]
        public string? From { get; init; }

        [CommandOption("--limit <N>")]
        [Description("Most entries to show, 1..10000 (default: 100).")]
        public string? Limit { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var request = new GetAuditRequest
        {
            FromSequence = AdminArguments.OptionalInteger(settings.From, "--from", 1, uint.MaxValue) ?? 1,
            Limit = AdminArguments.OptionalInteger(settings.Limit, "--limit", 1, 10_000) ?? 100,
        };
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        GetAuditResponse response = await connection.CallAsync(o => connection.Admin.GetAuditAsync(request, o), cancellationToken);
        string? problem = Check(response, request.FromSequence, connection.ServerCertificate);
        var entries = new List<(AuditEntry Entry, JsonDocument? Content)>();
        try
        {
            foreach (AuditEntry entry in response.Entries)
            {
                entries.Add((entry, TryParse(entry.CanonicalJson)));
            }
            if (settings.Json)
            {
                AdminOutput.Json(new
                {
                    Entries = entries.Select(e => new
                    {
                        Sequence = e.Entry.Sequence,
                        Time = Field(e.Content, "time"),
                        Actor = Field(e.Content, "actor"),
                        Action = Field(e.Content, "action"),
                        Details = e.Content?.RootElement.TryGetProperty("details", out JsonElement details) == true ? details : (JsonElement?)null,
                        Hash = e.Entry.Hash,
                    }).ToArray(),
                    HeadSequence = response.HeadSequence,
                    HeadHash = response.HeadHash,
                    Verified = problem is null,
                    Problem = problem,
                });
            }
            else
            {
                Table table = AdminOutput.Table("#", "time", "actor", "action", "details");
                foreach ((AuditEntry entry, JsonDocument? content) in entries)
                {
                    string details = content?.RootElement.TryGetProperty("details", out JsonElement d) == true
                        ? string.Join(" ", d.EnumerateObject().Select(p => $"{p.Name}={p.Value.GetString()}"))
                        : "";
                    table.AddRow(entry.Sequence.ToString(CultureInfo.InvariantCulture), Markup.Escape(Field(content, "time") ?? ""),
                        Markup.Escape(Field(content, "actor") ?? ""), Markup.Escape(Field(content, "action") ?? ""), Markup.Escape(details));
                }
                AdminOutput.Terminal().Write(table);
                Console.Out.WriteLine(problem is null
                    ? $"{entries.Count} entr{(entries.Count == 1 ? "y" : "ies")}; chain links verified; head #{response.HeadSequence} {response.HeadHash}"
                    : $"{entries.Count} entr{(entries.Count == 1 ? "y" : "ies")}; VERIFICATION FAILED: {problem}");
            }
        }
        finally
        {
            foreach ((_, JsonDocument? content) in entries)
            {
                content?.Dispose();
            }
        }
        if (problem is not null)
        {
            Console.Error.WriteLine($"coordinator: the audit trail does not verify: {problem}");
            return CliRunner.Failed;
        }
        return CliRunner.Ok;
    }

    /// <summary>The first problem in the slice, or null when every hash, link and (if reached) the signed head hold.</summary>
    internal static string? Check(GetAuditResponse response, ulong from, X509Certificate2? server)
    {
        string? previousHash = null;
        ulong expected = from;
        foreach (AuditEntry entry in response.Entries)
        {
            if (entry.Sequence != expected)
            {
                return $"entry {expected} is missing (got {entry.Sequence})";
            }
            string actual = AuditChain.Hash(entry.CanonicalJson);
            if (!string.Equals(actual, entry.Hash, StringComparison.Ordinal))
            {
                return $"entry {entry.Sequence} hashes to {actual}, not its stored {entry.Hash}";
            }
            using JsonDocument? content = TryParse(entry.CanonicalJson);
            if (content is null || !content.RootElement.TryGetProperty("prev", out JsonElement prev) || prev.ValueKind != JsonValueKind.String
                || !content.RootElement.TryGetProperty("sequence", out JsonElement sequence) || !sequence.TryGetUInt64(out ulong inner) || inner != entry.Sequence)
            {
                return $"entry {entry.Sequence} is not a well-formed audit entry";
            }
            string link = prev.GetString()!;
            if (entry.Sequence == 1 && link != AuditChain.GenesisHash || previousHash is not null && link != previousHash)
            {
                return $"entry {entry.Sequence} does not link to entry {entry.Sequence - 1}";
            }
            previousHash = actual;
            expected++;
        }
        if (response.Entries.Count > 0 && response.Entries[^1].Sequence == response.HeadSequence)
        {
            if (response.HeadHash != previousHash)
            {
                return $"the signed head names {response.HeadHash}, but entry {response.HeadSequence} hashes to {previousHash}";
            }
            if (server is null)
            {
                return "the coordinator's certificate is unknown, so the head signature cannot be checked";
            }
            using ECDsa? key = server.GetECDsaPublicKey();
            if (key is null || !key.VerifyData(AuditChain.HeadMessage((long)response.HeadSequence, response.HeadHash), response.HeadSignature.Span,
                    HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
            {
                return "the head signature does not verify with the coordinator's TLS key";
            }
        }
        return null;
    }

    private static JsonDocument? TryParse(string json)
    {
        try
        {
            return JsonDocument.Parse(json);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static string? Field(JsonDocument? content, string name) =>
        content?.RootElement.TryGetProperty(name, out JsonElement value) == true && value.ValueKind == JsonValueKind.String ? value.GetString() : null;
}
