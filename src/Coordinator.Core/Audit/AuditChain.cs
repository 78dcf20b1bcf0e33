using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Federated.Coordinator.Audit;

/// <summary>One stored link of the audit chain: the exact canonical JSON that was hashed and its hash.</summary>
internal sealed record AuditRecord(long Sequence, string CanonicalJson, string Hash);

/// <summary>The signed newest link: sequence, hash, the coordinator's signature over both and the signer's certificate (PEM).</summary>
internal sealed record AuditHead(long Sequence, string Hash, byte[] Signature, string SignerPem);

/// <summary>The outcome of verifying a chain: valid, or the first problem found.</summary>
internal sealed record AuditVerification(bool Valid, long Entries, string? Problem);

/// <summary>
/// The append-only audit chain: entry i is canonical JSON (keys in ordinal order, no whitespace) holding its
/// sequence, time, actor, action, details and the previous entry's hash; its hash is SHA-256 of those UTF-8
/// bytes. Editing, removing or reordering an entry breaks a hash link or the signed head.
/// </summary>
internal static class AuditChain
{
    /// <summary>The previous hash of the first entry.</summary>
    public static readonly string GenesisHash = new('0', 64);

    public static string Canonicalize(long sequence, DateTimeOffset time, string actor, string action, IReadOnlyDictionary<string, string> details, string previousHash)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequence, 1);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        ArgumentException.ThrowIfNullOrEmpty(action);
        ArgumentNullException.ThrowIfNull(details);
        ArgumentNullException.ThrowIfNull(previousHash);
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = false }))
        {
            // Keys written in ordinal order by hand, so the bytes never depend on a serializer's choices.
            writer.WriteStartObject();
            writer.WriteString("action", action);
            writer.WriteString("actor", actor);
            writer.WriteStartObject("details");
            foreach (KeyValuePair<string, string> pair in details.OrderBy(p => p.Key, StringComparer.Ordinal))
            {
                writer.WriteString(pair.Key, pair.Value);
            }
            writer.WriteEndObject();
            writer.WriteString("prev", previousHash);
            writer.WriteNumber("sequence", sequence);
            writer.WriteString("time", time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
            writer.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    public static string Hash(string canonicalJson) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonicalJson)));

    /// <summary>The bytes the head signature covers; the prefix keeps the signature from meaning anything elsewhere.</summary>
    public static byte[] HeadMessage(long sequence, string hash) =>
        Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"federated-audit-head:{sequence}:{hash}"));

    public static byte[] SignHead(ECDsa key, long sequence, string hash)
    {
        ArgumentNullException.ThrowIfNull(key);
        return key.SignData(HeadMessage(sequence, hash), HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }

    /// <summary>Checks every link in order and the signed head against <paramref name="verifier"/> (the coordinator's public key).</summary>
    public static AuditVerification Verify(IReadOnlyList<AuditRecord> records, AuditHead? head, ECDsa verifier)
    {
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(verifier);
        string previous = GenesisHash;
        for (int i = 0; i < records.Count; i++)
        {
            AuditRecord record = records[i];
            long expected = i + 1;
            if (record.Sequence != expected)
            {
                return new(false, i, $"entry {expected} is missing (found sequence {record.Sequence} in its place)");
            }
            string actual = Hash(record.CanonicalJson);
            if (!string.Equals(actual, record.Hash, StringComparison.Ordinal))
            {
                return new(false, i, $"entry {expected} was altered: its content hashes to {actual}, not the stored {record.Hash}");
            }
            long innerSequence;
            string innerPrevious;
            try
            {
                using JsonDocument document = JsonDocument.Parse(record.CanonicalJson);
                innerSequence = document.RootElement.GetProperty("sequence").GetInt64();
                innerPrevious = document.RootElement.GetProperty("prev").GetString() ?? "";
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                return new(false, i, $"entry {expected} is not a well-formed audit entry: {ex.Message}");
            }
            if (innerSequence != expected)
            {
                return new(false, i, $"entry {expected} holds sequence {innerSequence}: entries were reordered or removed");
            }
            if (!string.Equals(innerPrevious, previous, StringComparison.Ordinal))
            {
                return new(false, i, $"entry {expected} does not link to entry {expected - 1}: entries were reordered, removed or inserted");
            }
            previous = actual;
        }
        if (head is null)
        {
            return records.Count == 0
                ? new(true, 0, null)
                : new(false, records.Count, "the signed head is missing");
        }
        if (head.Sequence != records.Count || !string.Equals(head.Hash, previous, StringComparison.Ordinal))
        {
            return new(false, records.Count, $"the signed head names entry {head.Sequence} ({head.Hash}) but the chain ends at entry {records.Count} ({previous}): entries were removed or appended");
        }
        if (!verifier.VerifyData(HeadMessage(head.Sequence, head.Hash), head.Signature, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
        {
            return new(false, records.Count, "the head signature does not verify with the coordinator's key");
        }
        return new(true, records.Count, null);
    }
}
