using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Microsoft.Data.Sqlite;

namespace Federated.EdgeClient.Policy;

/// <summary>One round this machine paid for, as the local ledger stores it.</summary>
/// <param name="Skellam">For a distributed Skellam round, the mechanism's parameters as the manifest fixed them (the
/// coordinator prices the round from the same ones); null for central Gaussian rounds and for rows written before
/// the ledger kept them.</param>
internal sealed record LocalCharge(
    string RunId, long Round, NoiseMechanismKind Mechanism, double NoiseMultiplier, double SamplingRate, DateTimeOffset ChargedAt,
    DSkellamParameters? Skellam = null);

/// <summary>
/// The edge machine's own privacy ledger, in its own SQLite file: every round is charged here, durably, before
/// the update leaves the machine, whatever the coordinator claims to have spent.
/// </summary>
/// <remarks>
/// A charge is the RDP of the mechanism that protected the round, on the default order list, computed by the same
/// code the coordinator prices runs with: for a distributed Skellam round, the Skellam RDP of the calibrated
/// DSkellam plan (Agarwal, Kairouz and Liu 2021, Thm 3.5, through <see cref="DSkellamPlan.RdpPerRound"/>); for a
/// central Gaussian round, the Poisson-subsampled Gaussian with the manifest's noise multiplier and sampling rate
/// (Mironov, Talwar and Zhang 2019, through <see cref="RdpAnalysis"/>). Charges are composed in the shared
/// <see cref="RdpAccountant"/>. Rows keep the parameters, not the RDP values, so accounting is recomputed from first
/// principles each time the ledger opens. Rows written before the Skellam parameters were kept are accounted as the
/// Gaussian they were charged as.
/// </remarks>
internal sealed class LocalPrivacyLedger : IDisposable
{
    public const string FileName = "edge-ledger.db";

    private readonly SqliteConnection _connection;
    private readonly List<LocalCharge> _charges = [];
    private readonly IReadOnlyList<double> _orders = RdpOrders.Default;
    private readonly Dictionary<(NoiseMechanismKind Mechanism, double Q, double Z, DSkellamParameters? Skellam), double[]> _rdpCache = [];

    // Columns added after the first release of the ledger file; a file without them is migrated in place.
    private static readonly (string Name, string Type)[] s_skellamColumns =
    [
        ("skellam_dimension", "INTEGER"), ("skellam_bits", "INTEGER"), ("skellam_clip_norm", "REAL"),
        ("skellam_max_clients", "INTEGER"), ("skellam_min_clients", "INTEGER"), ("skellam_beta", "REAL"), ("skellam_wrap", "REAL"),
    ];

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
            AddMissingColumns(connection);
            var ledger = new LocalPrivacyLedger(connection);
            using SqliteCommand select = connection.CreateCommand();
            select.CommandText = "SELECT run_id, round, mechanism, noise_multiplier, sampling_rate, charged_at, "
                + string.Join(", ", s_skellamColumns.Select(c => c.Name)) + " FROM charges ORDER BY rowid";
            using SqliteDataReader reader = select.ExecuteReader();
            while (reader.Read())
            {
                NoiseMechanismKind mechanism = LocalPolicy.ParseMechanism(reader.GetString(2))
                    ?? throw new InvalidDataException($"{path}: unknown mechanism '{reader.GetString(2)}' in the ledger");
                double z = reader.GetDouble(3);
                DSkellamParameters? skellam = reader.IsDBNull(6) ? null : new DSkellamParameters(
                    reader.GetInt32(6), reader.GetInt32(7), reader.GetDouble(8), z, reader.GetInt32(9), reader.GetInt32(10), reader.GetDouble(11), reader.GetDouble(12));
                ledger._charges.Add(new LocalCharge(reader.GetString(0), reader.GetInt64(1), mechanism, z,
                    reader.GetDouble(4), DateTimeOffset.Parse(reader.GetString(5), CultureInfo.InvariantCulture), skellam));
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
        var accountant = new RdpAccountant(_orders);
        // Rounds with the same mechanism and parameters compose as one RDP vector times their count, as the
        // coordinator composes a run's rounds, so both sides reach the same epsilon for the same rounds.
        foreach (var group in _charges.Where(c => runId is null || c.RunId == runId).Append(plus).OfType<LocalCharge>().GroupBy(Key))
        {
            accountant.Compose(RoundRdp(group.Key), group.Count());
        }
        return accountant.GetEpsilon(delta);
    }

    private static (NoiseMechanismKind, double, double, DSkellamParameters?) Key(LocalCharge charge) =>
        charge.Mechanism == NoiseMechanismKind.DistributedSkellam && charge.Skellam is { } skellam
            ? (charge.Mechanism, 1.0, charge.NoiseMultiplier, skellam with { NoiseMultiplier = charge.NoiseMultiplier })
            : (charge.Mechanism, charge.SamplingRate, charge.NoiseMultiplier, null);

    // Rounds of a run share their parameters, so the per-order RDP is computed once per key.
    private double[] RoundRdp((NoiseMechanismKind Mechanism, double Q, double Z, DSkellamParameters? Skellam) key)
    {
        if (!_rdpCache.TryGetValue(key, out double[]? rdp))
        {
            rdp = key.Skellam is { } skellam
                ? DSkellamPlan.Calibrate(skellam).RdpPerRound(_orders)
                : RdpAnalysis.SubsampledGaussian(key.Q, key.Z, _orders);
            _rdpCache[key] = rdp;
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
            INSERT INTO charges (run_id, round, mechanism, noise_multiplier, sampling_rate, charged_at,
                skellam_dimension, skellam_bits, skellam_clip_norm, skellam_max_clients, skellam_min_clients, skellam_beta, skellam_wrap)
            VALUES ($run, $round, $mechanism, $z, $q, $at, $d, $b, $c, $n, $t, $beta, $k)
            """;
        DSkellamParameters? skellam = charge.Skellam;
        insert.Parameters.AddWithValue("$d", (object?)skellam?.Dimension ?? DBNull.Value);
        insert.Parameters.AddWithValue("$b", (object?)skellam?.Bits ?? DBNull.Value);
        insert.Parameters.AddWithValue("$c", (object?)skellam?.ClipNorm ?? DBNull.Value);
        insert.Parameters.AddWithValue("$n", (object?)skellam?.MaxClients ?? DBNull.Value);
        insert.Parameters.AddWithValue("$t", (object?)skellam?.MinClients ?? DBNull.Value);
        insert.Parameters.AddWithValue("$beta", (object?)skellam?.Beta ?? DBNull.Value);
        insert.Parameters.AddWithValue("$k", (object?)skellam?.WrapStdDevs ?? DBNull.Value);
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
            // What the round was priced from: the DSkellam parameters for distributed Skellam rounds, null otherwise.
            skellam = c.Skellam is { } p
                ? new { dimension = p.Dimension, ring_bits = p.Bits, clip_norm = p.ClipNorm, max_clients = p.MaxClients, min_clients = p.MinClients }
                : null,
            charged_at = c.ChargedAt,
        }),
    });

    public void Dispose() => _connection.Dispose();

    private static void AddMissingColumns(SqliteConnection connection)
    {
        var present = new HashSet<string>(StringComparer.Ordinal);
        using (SqliteCommand info = connection.CreateCommand())
        {
            info.CommandText = "PRAGMA table_info(charges)";
            using SqliteDataReader reader = info.ExecuteReader();
            while (reader.Read())
            {
                present.Add(reader.GetString(1));
            }
        }
        foreach ((string name, string type) in s_skellamColumns.Where(c => !present.Contains(c.Name)))
        {
            Execute(connection, $"ALTER TABLE charges ADD COLUMN {name} {type}");
        }
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
