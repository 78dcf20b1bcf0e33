using System.Security.Cryptography;
using Federated.Coordinator.Audit;

namespace Federated.Coordinator.State;

/// <summary>
/// Appends links to the audit chain inside a unit of work and re-signs the head in the same transaction, so the chain
/// and its signed head never disagree with the writes they describe.
/// </summary>
internal sealed class AuditWriter : IDisposable
{
    private readonly ECDsa _signingKey;
    private readonly string _signerPem;

    /// <summary>Takes ownership of <paramref name="signingKey"/>; <paramref name="signerPem"/> is its certificate, stored with the head.</summary>
    public AuditWriter(ECDsa signingKey, string signerPem)
    {
        ArgumentNullException.ThrowIfNull(signingKey);
        ArgumentException.ThrowIfNullOrEmpty(signerPem);
        _signingKey = signingKey;
        _signerPem = signerPem;
    }

    public AuditRecord Append(UnitOfWork work, string actor, string action, IReadOnlyDictionary<string, string> details)
    {
        ArgumentNullException.ThrowIfNull(work);
        (long sequence, string previous) = work.Query(
            "SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1", r => (r.Long(0) + 1, r.Text(1))) is [var last]
            ? last
            : (1L, AuditChain.GenesisHash);
        string json = AuditChain.Canonicalize(sequence, work.Now, actor, action, details, previous);
        string hash = AuditChain.Hash(json);
        work.Execute("INSERT INTO audit (sequence, canonical_json, hash) VALUES (@s, @j, @h)", ("@s", sequence), ("@j", json), ("@h", hash));
        byte[] signature = AuditChain.SignHead(_signingKey, sequence, hash);
        work.Execute(
            """
            INSERT INTO audit_head (id, sequence, hash, signature, signer) VALUES (1, @s, @h, @sig, @pem)
            ON CONFLICT (id) DO UPDATE SET sequence = @s, hash = @h, signature = @sig, signer = @pem
            """,
            ("@s", sequence), ("@h", hash), ("@sig", signature), ("@pem", _signerPem));
        return new AuditRecord(sequence, json, hash);
    }

    public void Dispose() => _signingKey.Dispose();
}
