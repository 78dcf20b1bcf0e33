using System.Globalization;
using Federated.Aggregation.Privacy;
using Microsoft.Data.Sqlite;

namespace Federated.EdgeClient.Policy;

/// <summary>One round this machine trained with DP-SGD, as the local ledger stores it: the run's z, C and expected batch, the round's local steps and this machine's record count then.</summary>
internal sealed record LocalRecordCharge(string RunId, long Round, RecordLevelRound Work, DateTimeOffset ChargedAt);

// The record-level unit: DP-SGD rounds, charged in their own table next to the client-level charges (a round of a run
// with privacy_unit both has a row in each, written in one transaction) and accounted separately.
public sealed partial class LocalPrivacyLedger
{
    private const string RecordChargesTable = """
        CREATE TABLE IF NOT EXISTS record_charges (
            run_id TEXT NOT NULL,
            round INTEGER NOT NULL,
            noise_multiplier REAL NOT NULL,
            max_grad_norm REAL NOT NULL,
            expected_batch INTEGER NOT NULL,
            steps INTEGER NOT NULL,
            records INTEGER NOT NULL,
            charged_at TEXT NOT NULL,
            PRIMARY KEY (run_id, round));
        """;

    private readonly List<LocalRecordCharge> _recordCharges = [];

    internal IReadOnlyList<LocalRecordCharge> RecordCharges => _recordCharges;

    /// <summary>
    /// Record-level epsilon at <paramref name="delta"/> of every DP-SGD round, or of one run's, plus <paramref name="plus"/>:
    /// each round's steps of the Poisson-subsampled Gaussian at its own q = expected batch / records, composed per order
    /// (<see cref="RecordLevelPricing"/>). Add/remove of one record; zero when nothing was charged.
    /// </summary>
    internal PrivacySpent RecordSpent(double delta, string? runId = null, LocalRecordCharge? plus = null) =>
        RecordLevelPricing.Epsilon(
            _recordCharges.Append(plus).OfType<LocalRecordCharge>().Where(c => runId is null || c.RunId == runId).Select(c => c.Work),
            delta, _orders);

    /// <summary>The record-level epsilon at <paramref name="delta"/> of every DP-SGD round, or of one run's (see <see cref="RecordSpent"/>).</summary>
    public double RecordEpsilon(double delta, string? runId = null) => RecordSpent(delta, runId).Epsilon;

    private void LoadRecordCharges(string path)
    {
        using SqliteCommand select = _connection.CreateCommand();
        select.CommandText = "SELECT run_id, round, noise_multiplier, max_grad_norm, expected_batch, steps, records, charged_at FROM record_charges ORDER BY rowid";
        using SqliteDataReader reader = select.ExecuteReader();
        while (reader.Read())
        {
            var work = new RecordLevelRound(reader.GetDouble(2), reader.GetDouble(3), reader.GetInt32(4), reader.GetInt32(5), reader.GetInt32(6));
            if (work.Problem() is { } problem)
            {
                // A row this ledger cannot price would make every later epsilon wrong; refuse to open rather than undercount.
                throw new InvalidDataException($"{path}: record charge for run {reader.GetString(0)} round {reader.GetInt64(1)} cannot be priced: {problem}");
            }
            _recordCharges.Add(new LocalRecordCharge(reader.GetString(0), reader.GetInt64(1), work,
                DateTimeOffset.Parse(reader.GetString(7), CultureInfo.InvariantCulture)));
        }
    }

    private void InsertRecordCharge(SqliteTransaction transaction, LocalRecordCharge charge)
    {
        using SqliteCommand insert = _connection.CreateCommand();
        insert.Transaction = transaction;
        insert.CommandText = """
            INSERT INTO record_charges (run_id, round, noise_multiplier, max_grad_norm, expected_batch, steps, records, charged_at)
            VALUES ($run, $round, $z, $c, $b, $steps, $n, $at)
            """;
        insert.Parameters.AddWithValue("$run", charge.RunId);
        insert.Parameters.AddWithValue("$round", charge.Round);
        insert.Parameters.AddWithValue("$z", charge.Work.NoiseMultiplier);
        insert.Parameters.AddWithValue("$c", charge.Work.MaxGradNorm);
        insert.Parameters.AddWithValue("$b", charge.Work.ExpectedBatch);
        insert.Parameters.AddWithValue("$steps", charge.Work.Steps);
        insert.Parameters.AddWithValue("$n", charge.Work.Records);
        insert.Parameters.AddWithValue("$at", charge.ChargedAt.ToString("O", CultureInfo.InvariantCulture));
        insert.ExecuteNonQuery();
    }

    private object RecordChargesJson() => _recordCharges.Select(c => new
    {
        run_id = c.RunId,
        round = c.Round,
        noise_multiplier = c.Work.NoiseMultiplier,
        max_grad_norm = c.Work.MaxGradNorm,
        expected_batch = c.Work.ExpectedBatch,
        steps = c.Work.Steps,
        records = c.Work.Records,
        sampling_rate = c.Work.SamplingRate,
        charged_at = c.ChargedAt,
    });
}
