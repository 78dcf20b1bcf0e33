using System.Globalization;
using Federated.Protos.V1;

namespace Federated.Coordinator.State;

/// <summary>
/// The rows that record stored global adapters (hash, size, CMS signature). The bytes live in the adapter store's
/// files; a row is what makes them servable, and a round's adapter only once its round's completion committed.
/// </summary>
internal sealed class AdapterRecordStore(StateDatabase database)
{
    /// <summary>Records an adapter whose bytes are already durable, and audits it, in <paramref name="work"/>; recording it twice keeps the first row.</summary>
    public void Record(UnitOfWork work, StoredAdapter adapter, string runId, int round, string actor)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentException.ThrowIfNullOrEmpty(adapter.Sha256);
        ArgumentNullException.ThrowIfNull(runId);
        work.Execute(
            "INSERT INTO adapters (sha256, run_id, round, size_bytes, signature, created_at) VALUES (@h, @run, @round, @size, @sig, @at) ON CONFLICT (sha256) DO NOTHING",
            ("@h", adapter.Sha256), ("@run", runId), ("@round", round), ("@size", adapter.SizeBytes), ("@sig", adapter.Signature), ("@at", StateValues.Format(work.Now)));
        work.Audit(actor, "adapter.store", new Dictionary<string, string>
        {
            ["sha256"] = adapter.Sha256,
            ["run_id"] = runId,
            ["round"] = round.ToString(CultureInfo.InvariantCulture),
            ["size_bytes"] = adapter.SizeBytes.ToString(CultureInfo.InvariantCulture),
        });
    }

    /// <inheritdoc cref="Record(UnitOfWork, StoredAdapter, string, int, string)"/>
    public void Record(StoredAdapter adapter, string runId, int round, string actor) =>
        database.Write(work => Record(work, adapter, runId, round, actor));

    /// <summary>A servable adapter's size and signature; null when unknown or not yet released.</summary>
    public (long SizeBytes, byte[] Signature)? Get(string sha256)
    {
        List<(long, byte[])> rows = database.Read(session => session.Query(
            // A round's adapter is served only once the transaction that completed (and charged) its round committed;
            // an initial adapter (round 0) carries no data and is served from the start.
            """
            SELECT a.size_bytes, a.signature FROM adapters a WHERE a.sha256 = @h
            AND (a.round = 0 OR EXISTS (SELECT 1 FROM rounds r WHERE r.adapter_sha256_after = a.sha256 AND r.stage = @done))
            """,
            r => (r.Long(0), r.Blob(1)),
            ("@h", sha256), ("@done", (int)RoundStage.Completed)));
        return rows.Count == 0 ? null : rows[0];
    }

    /// <summary>Whether any row records <paramref name="sha256"/>, released or not (a file without one may be discarded).</summary>
    public bool IsRecorded(string sha256) =>
        database.Read(session => session.Scalar<long>("SELECT COUNT(*) FROM adapters WHERE sha256 = @h", ("@h", sha256)) > 0);
}
