using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Microsoft.Data.Sqlite;

namespace Federated.EdgeClient.Policy;

/// <summary>One round this machine paid for, as the local ledger stores it.</summary>
internal sealed record LocalCharge(
    string RunId, long Round, NoiseMechanismKind Mechanism, double NoiseMultiplier, double SamplingRate, DateTimeOffset ChargedAt);

/// <summary>
/// The edge machine's own privacy ledger, in its own SQLite file: every round is charged here, durably, before
/// the update leaves the machine, whatever the coordinator claims to have spent.
/// </summary>
/// <remarks>
/// A charge is the RDP of one round of the Poisson-subsampled Gaussian with the manifest's noise multiplier and
/// sampling rate (Mironov, Talwar and Zhang 2019, through <see cref="RdpAnalysis"/>), on the default order list,
/// composed by adding per order. Rows keep the parameters, not the RDP values, so accounting is recomputed
/// from first principles each time the ledger opens.
/// </remarks>
internal sealed class LocalPrivacyLedger : IDisposable
{
    public const string FileName = "edge-ledger.db";

    private readonly SqliteConnection _connection;
    private readonly List<LocalCharge> _charges = [];
    private readonly IReadOnlyList<double> _orders = RdpOrders.Default;
    private readonly Dictionary<(double Q, double Z), double[]> _rdpCache = [];

    private LocalPrivacyLedger(SqliteConnection connection) => _connection = connection;

    public IReadOnlyList<LocalCharge> Charges => _charges;

    public static LocalPrivacyLedger Open(string path)
    {
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        connection.Open();
        try
        {
            Execute(connection, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
            Execute(connection, """
                CREATE TABLE IF NOT EXISTS charges (
                    run_id TEXT NOT NULL,
                    round INTEGER NOT NULL,
                    mechanism TEXT NOT NULL,
                    noise_multiplier REAL NOT NULL,
                    sampling_rate REAL NOT NULL,
                    charged_at TEXT NOT NULL,
                    PRIMARY KEY (run_id, round));
                """);
            var ledger = new LocalPrivacyLedger(connection);
            using SqliteCommand select = connection.CreateCommand();
            select.CommandText = "SELECT run_id, round, mechanism, noise_multiplier, sampling_rate, charged_at FROM charges ORDER BY rowid";
            using SqliteDataReader reader = select.ExecuteReader();
            while (reader.Read())
            {
                NoiseMechanismKind mechanism = LocalPolicy.ParseMechanism(reader.GetString(2))
                    ?? throw new InvalidDataException($"{path}: unknown mechanism '{reader.GetString(2)}' in the ledger");
                ledger._charges.Add(new LocalCharge(reader.GetString(0), reader.GetInt64(1), mechanism, reader.GetDouble(3),
                    reader.GetDouble(4), DateTimeOffset.Parse(reader.GetString(5), CultureInfo.InvariantCulture)));
            }
            return ledger;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>Epsilon at <paramref name="delta"/> of every charge, or of one run's charges.</summary>
    public PrivacySpent Spent(double delta, string? runId = null, LocalCharge? plus = null)
    {
        double[] total = new double[_orders.Count];
        foreach (LocalCharge charge in _charges.Where(c => runId is null || c.RunId == runId).Append(plus).OfType<LocalCharge>())
        {
            double[] rdp = RoundRdp(charge);
            for (int i = 0; i < total.Length; i++)
            {
                total[i] += rdp[i];
            }
        }
        return RdpAnalysis.Epsilon(_orders, total, delta);
    }

    // Rounds of a run share their parameters, so the per-order RDP is computed once per (q, z).
    private double[] RoundRdp(LocalCharge charge)
    {
        if (!_rdpCache.TryGetValue((charge.SamplingRate, charge.NoiseMultiplier), out double[]? rdp))
        {
            rdp = RdpAnalysis.SubsampledGaussian(charge.SamplingRate, charge.NoiseMultiplier, _orders);
            _rdpCache[(charge.SamplingRate, charge.NoiseMultiplier)] = rdp;
        }
        return rdp;
    }

    public bool IsCharged(string runId, long round) => _charges.Any(c => c.RunId == runId && c.Round == round);

    /// <summary>Rounds charged in the 24 hours before <paramref name="now"/>.</summary>
    public int RoundsInDayBefore(DateTimeOffset now) => _charges.Count(c => c.ChargedAt > now.AddDays(-1) && c.ChargedAt <= now);

    /// <summary>Writes the charge durably; a repeated (run, round) is kept once.</summary>
    public void Record(LocalCharge charge)
    {
        if (IsCharged(charge.RunId, charge.Round))
        {
            return;
        }
        using SqliteTransaction transaction = _connection.BeginTransaction();
        using SqliteCommand insert = _connection.CreateCommand();
        insert.Transaction = transaction;
        insert.CommandText = """
            INSERT INTO charges (run_id, round, mechanism, noise_multiplier, sampling_rate, charged_at)
            VALUES ($run, $round, $mechanism, $z, $q, $at)
            """;
        insert.Parameters.AddWithValue("$run", charge.RunId);
        insert.Parameters.AddWithValue("$round", charge.Round);
        insert.Parameters.AddWithValue("$mechanism", LocalPolicy.MechanismName(charge.Mechanism));
        insert.Parameters.AddWithValue("$z", charge.NoiseMultiplier);
        insert.Parameters.AddWithValue("$q", charge.SamplingRate);
        insert.Parameters.AddWithValue("$at", charge.ChargedAt.ToString("O", CultureInfo.InvariantCulture));
        insert.ExecuteNonQuery();
        transaction.Commit();
        _charges.Add(charge);
    }

    /// <summary>The ledger as JSON-ready rows, for `edge-client ledger show`.</summary>
    public string ToJson(double delta) => JsonSerializer.Serialize(new
    {
        delta,
        epsilon_lifetime = Spent(delta).Epsilon,
        runs = _charges.GroupBy(c => c.RunId).Select(g => new { run_id = g.Key, rounds = g.Count(), epsilon = Spent(delta, g.Key).Epsilon }),
        charges = _charges.Select(c => new
        {
            run_id = c.RunId,
            round = c.Round,
            mechanism = LocalPolicy.MechanismName(c.Mechanism),
            noise_multiplier = c.NoiseMultiplier,
            sampling_rate = c.SamplingRate,
            charged_at = c.ChargedAt,
        }),
    });

    public void Dispose() => _connection.Dispose();

    private static void Execute(SqliteConnection connection, string sql)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
