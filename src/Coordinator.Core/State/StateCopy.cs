using System.Data;
using System.Data.Common;
using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Audit;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace Federated.Coordinator.State;

/// <summary>What a state copy moved and checked: per-table row counts, the adapters' bytes, the audit head and the ledger per population.</summary>
internal sealed record StateCopyReport(
    IReadOnlyList<(string Table, long Rows)> Tables,
    long AdapterBlobs,
    long AdapterBytes,
    string AdapterDigest,
    long AuditEntries,
    string? AuditHeadHash,
    IReadOnlyList<(string Population, long Charges, double EpsilonDeltaSum)> Ledger);

/// <summary>
/// Copies a coordinator's whole state from one backend to another (SQLite to PostgreSQL and back): every table with its
/// keys and ledger sequence numbers, in one destination transaction, and the adapters' stored bytes as they are (still
/// encrypted under the same key: the ciphertext is bound to the adapter's hash, not to where it lies). Refuses a
/// destination that holds anything. Then verifies the destination against the source: the audit chain verifies with the
/// same head (sequence, hash, signature), the ledger per population has the same charges and sums, every table the
/// same row count and the adapters the same bytes.
/// </summary>
internal static class StateCopy
{
    // Parents before children (foreign keys), so the copy commits with constraints checked.
    private static readonly string[] s_tables =
        ["clients", "runs", "rounds", "participants", "adapters", "budgets", "ledger", "reservations", "client_charges", "audit", "audit_head"];

    private static readonly string[] s_adapterSuffixes = [".adapter", ".adapter.enc"];

    /// <exception cref="InvalidOperationException">The destination is not empty, the source's schema is not current, or a check after the copy failed.</exception>
    public static StateCopyReport Copy(StateLocation from, StateLocation to)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        if (from.Display == to.Display)
        {
            throw new InvalidOperationException($"--from and --to name the same state ({from.Display})");
        }
        using DbConnection source = CoordinatorState.OpenReadOnly(from);
        int version = from.Backend == StateBackend.Postgres
            ? PostgresStateDatabase.ReadVersion((NpgsqlConnection)source)
            : SqliteStateDatabase.ReadVersion((SqliteConnection)source);
        if (version != StateSchema.Migrations.Length)
        {
            throw new InvalidOperationException(
                $"the source {from.Display} is at schema version {version}, this coordinator's is {StateSchema.Migrations.Length}: start the coordinator on it once (it migrates the state), then copy");
        }
        using DbConnection destination = to.Backend == StateBackend.Postgres
            ? PostgresStateDatabase.OpenMigrated(to)
            : SqliteStateDatabase.OpenMigrated(to.Path!);
        RequireEmpty(destination, to);

        // One consistent snapshot of the source (a coordinator still writing to it would otherwise tear the copy).
        using (DbTransaction snapshot = source.BeginTransaction(from.Backend == StateBackend.Postgres ? IsolationLevel.RepeatableRead : IsolationLevel.Serializable))
        using (DbTransaction write = destination.BeginTransaction())
        {
            foreach (string table in s_tables)
            {
                CopyTable(source, snapshot, destination, write, table);
            }
            if (to.Backend == StateBackend.Postgres)
            {
                // Identity columns do not follow explicit values: the next charge must continue after the copied ones.
                Execute(destination, write,
                    "SELECT setval(pg_get_serial_sequence('ledger', 'sequence'), COALESCE(MAX(sequence), 1), MAX(sequence) IS NOT NULL) FROM ledger");
            }
            foreach ((string name, byte[] content) in ReadBlobs(from, source, snapshot))
            {
                WriteBlob(to, destination, write, name, content);
            }
            write.Commit();
        }
        return Verify(from, to);
    }

    /// <summary>Checks the copy against its source, reading both afresh; returns the figures.</summary>
    /// <exception cref="InvalidOperationException">Any figure differs, or the destination's chain does not verify.</exception>
    public static StateCopyReport Verify(StateLocation from, StateLocation to)
    {
        StateCopyReport expected = Figures(from);
        StateCopyReport actual = Figures(to);
        foreach (((string table, long rows), (_, long copied)) in expected.Tables.Zip(actual.Tables))
        {
            if (rows != copied)
            {
                throw new InvalidOperationException($"table {table} has {rows} rows in {from.Display} but {copied} in {to.Display}");
            }
        }
        if (expected.AdapterBlobs != actual.AdapterBlobs || expected.AdapterBytes != actual.AdapterBytes || expected.AdapterDigest != actual.AdapterDigest)
        {
            throw new InvalidOperationException(
                $"{from.Display} holds {expected.AdapterBlobs} stored adapters ({expected.AdapterBytes} bytes, SHA-256 {expected.AdapterDigest}) but {to.Display} {actual.AdapterBlobs} ({actual.AdapterBytes} bytes, SHA-256 {actual.AdapterDigest})");
        }
        if (expected.AuditEntries != actual.AuditEntries || expected.AuditHeadHash != actual.AuditHeadHash)
        {
            throw new InvalidOperationException($"the audit head differs: {expected.AuditEntries} entries, head {expected.AuditHeadHash} in the source; {actual.AuditEntries}, {actual.AuditHeadHash} in the copy");
        }
        if (!expected.Ledger.SequenceEqual(actual.Ledger))
        {
            throw new InvalidOperationException($"the ledger totals per population differ: {Describe(expected.Ledger)} in the source, {Describe(actual.Ledger)} in the copy");
        }
        return actual;
    }

    private static string Describe(IReadOnlyList<(string Population, long Charges, double EpsilonDeltaSum)> ledger) =>
        string.Join("; ", ledger.Select(l => $"{l.Population}: {l.Charges} charges, epsilon_delta sum {l.EpsilonDeltaSum.ToString("R", CultureInfo.InvariantCulture)}"));

    private static StateCopyReport Figures(StateLocation location)
    {
        using DbConnection connection = CoordinatorState.OpenReadOnly(location);
        var tables = s_tables.Select(t => (t, Count(connection, t))).ToList();
        IReadOnlyList<AuditRecord> records = AuditStore.ReadRecords(connection);
        AuditHead? head = AuditStore.ReadHead(connection);
        if (head is not null)
        {
            // The chain must verify on its own, under the key that signed its head, and the head's signature travel
            // byte for byte: a copy cannot re-sign it.
            using X509Certificate2 signer = X509Certificate2.CreateFromPem(head.SignerPem);
            using ECDsa key = signer.GetECDsaPublicKey() ?? throw new InvalidOperationException("the audit head's signer has no ECDSA key");
            AuditVerification verification = AuditChain.Verify(records, head, key);
            if (!verification.Valid)
            {
                throw new InvalidOperationException($"the audit chain of {location.Display} does not verify: {verification.Problem}");
            }
        }
        var session = new StateSession(connection, transaction: null, default);
        var ledger = session.Query(
            "SELECT population, COUNT(*), COALESCE(SUM(epsilon_delta), 0) FROM ledger GROUP BY population ORDER BY population",
            r => (r.Text(0), r.Long(1), r.Real(2)));
        long blobs = 0, bytes = 0;
        using var digest = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach ((string name, byte[] content) in ReadBlobs(location, connection, transaction: null))
        {
            blobs++;
            bytes += content.Length;
            digest.AppendData(System.Text.Encoding.UTF8.GetBytes(name + "\n"));
            digest.AppendData(content);
        }
        // The head's hash with a digest of its signature: both must travel byte for byte.
        string? headHash = head is null ? null : $"{head.Hash} (signature {Convert.ToHexStringLower(SHA256.HashData(head.Signature))[..16]})";
        return new StateCopyReport(tables, blobs, bytes, Convert.ToHexStringLower(digest.GetHashAndReset()), records.Count, headHash, ledger);
    }

    private static void RequireEmpty(DbConnection destination, StateLocation to)
    {
        foreach (string table in s_tables.Append("adapter_blobs"))
        {
            if (Count(destination, table) > 0)
            {
                throw new InvalidOperationException($"the destination {to.Display} is not empty (table {table} has rows); state copy only fills an empty state");
            }
        }
        if (to.AdapterDirectory is { } folder && Directory.Exists(folder) && Directory.EnumerateFileSystemEntries(folder).Any())
        {
            throw new InvalidOperationException($"the destination's adapters folder {folder} is not empty; state copy only fills an empty state");
        }
    }

    private static long Count(DbConnection connection, string table)
    {
        using DbCommand command = connection.CreateCommand();
        command.CommandText = $"SELECT COUNT(*) FROM {table}";
        return Convert.ToInt64(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    private static void CopyTable(DbConnection source, DbTransaction snapshot, DbConnection destination, DbTransaction write, string table)
    {
        using DbCommand select = source.CreateCommand();
        select.Transaction = snapshot;
        // Primary-key order (the first column of every table's key), so sequences are inserted ascending.
        select.CommandText = $"SELECT * FROM {table} ORDER BY 1";
        using DbDataReader reader = select.ExecuteReader();
        string[] columns = [.. Enumerable.Range(0, reader.FieldCount).Select(reader.GetName)];
        using DbCommand insert = destination.CreateCommand();
        insert.Transaction = write;
        insert.CommandText = $"INSERT INTO {table} ({string.Join(", ", columns)}) VALUES ({string.Join(", ", columns.Select((_, i) => "@p" + i.ToString(CultureInfo.InvariantCulture)))})";
        var parameters = new DbParameter[columns.Length];
        for (int i = 0; i < columns.Length; i++)
        {
            parameters[i] = insert.CreateParameter();
            parameters[i].ParameterName = "@p" + i.ToString(CultureInfo.InvariantCulture);
            insert.Parameters.Add(parameters[i]);
        }
        while (reader.Read())
        {
            for (int i = 0; i < columns.Length; i++)
            {
                parameters[i].Value = reader.GetValue(i);
            }
            insert.ExecuteNonQuery();
        }
    }

    private static IEnumerable<(string Name, byte[] Content)> ReadBlobs(StateLocation location, DbConnection connection, DbTransaction? transaction)
    {
        if (location.Backend == StateBackend.Postgres)
        {
            using DbCommand command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = "SELECT name, content FROM adapter_blobs ORDER BY name";
            using DbDataReader reader = command.ExecuteReader();
            while (reader.Read())
            {
                yield return (reader.GetString(0), (byte[])reader.GetValue(1));
            }
            yield break;
        }
        string folder = location.AdapterDirectory!;
        if (!Directory.Exists(folder))
        {
            yield break;
        }
        foreach (string path in Directory.GetFiles(folder).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(path);
            if (s_adapterSuffixes.Any(suffix => name.EndsWith(suffix, StringComparison.Ordinal)))
            {
                yield return (name, File.ReadAllBytes(path));
            }
        }
    }

    private static void WriteBlob(StateLocation to, DbConnection destination, DbTransaction write, string name, byte[] content)
    {
        if (to.Backend == StateBackend.Postgres)
        {
            using DbCommand command = destination.CreateCommand();
            command.Transaction = write;
            command.CommandText = "INSERT INTO adapter_blobs (name, content) VALUES (@n, @c)";
            AddParameter(command, "@n", name);
            AddParameter(command, "@c", content);
            command.ExecuteNonQuery();
            return;
        }
        // Files are flushed before the rows that name them commit, as the adapter store itself does.
        new Rounds.AdapterFiles(to.AdapterDirectory!).Write(name, content);
    }

    private static void AddParameter(DbCommand command, string name, object value)
    {
        DbParameter parameter = command.CreateParameter();
        parameter.ParameterName = name;
        parameter.Value = value;
        command.Parameters.Add(parameter);
    }

    private static void Execute(DbConnection connection, DbTransaction transaction, string sql)
    {
        using DbCommand command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
