using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Microsoft.Data.Sqlite;

namespace Federated.EdgeClient.Policy;

/// <summary>One round this machine paid for, as the local ledger stores it.</summary>
/// <param name="Plan">The round's privacy plan as the manifest fixed it (mechanism, dimension, clients, threshold, ring,
/// clip norm, the relation; the coordinator prices the round from the same); null for rows written before the ledger
/// kept them.</param>
internal sealed record LocalCharge(
    string RunId, long Round, NoiseMechanismKind Mechanism, double NoiseMultiplier, double SamplingRate, DateTimeOffset ChargedAt,
    PrivacyPlanParameters? Plan = null);

/// <summary>
/// The edge machine's own privacy ledger, in its own SQLite file: every round is charged here, durably, before
/// the update leaves the machine, whatever the coordinator claims to have spent.
/// </summary>
/// <remarks>
/// A charge is one round of <see cref="PrivacyPlan.RoundRdp"/> for the manifest's parameters: the same pricing the
/// coordinator charges its ledger with and the officer's calculator prints (distributed Skellam at integer orders,
/// Agarwal, Kairouz and Liu 2021, Thm 3.5; central discrete Gaussian, Canonne, Kamath and Steinke 2020; replace-one),
/// composed per order. Rows keep the parameters, not the RDP values, so accounting is recomputed from first principles
/// each time the ledger opens. Rows written before the parameters were kept are accounted as the continuous Gaussian
/// of their noise multiplier at replace-one (sensitivity doubled: the Gaussian of z / 2) without amplification.
/// </remarks>
public sealed partial class LocalPrivacyLedger : IDisposable
{
    public const string FileName = "edge-ledger.db";

    private readonly SqliteConnection _connection;
    private readonly List<LocalCharge> _charges = [];
    private readonly IReadOnlyList<double> _orders = RdpOrders.Default;
    private readonly Dictionary<object, double[]> _rdpCache = [];
    private readonly Dictionary<object, double[]?> _ownShareCache = [];

    // Columns added after the first release of the ledger file; a file without them is migrated in place. The skellam_*
    // columns hold the plan of either mechanism (their name is from when only distributed rounds kept it).
    private static readonly (string Name, string Type)[] s_planColumns =
    [
        ("skellam_dimension", "INTEGER"), ("skellam_bits", "INTEGER"), ("skellam_clip_norm", "REAL"),
        ("skellam_max_clients", "INTEGER"), ("skellam_min_clients", "INTEGER"), ("skellam_beta", "REAL"), ("skellam_wrap", "REAL"),
        ("adjacency", "TEXT"), ("plan_delta", "REAL"),
    ];

    private LocalPrivacyLedger(SqliteConnection connection) => _connection = connection;

    internal IReadOnlyList<LocalCharge> Charges => _charges;

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
            Execute(connection, RecordChargesTable);
            var ledger = new LocalPrivacyLedger(connection);
            ledger.LoadRecordCharges(path);
            using SqliteCommand select = connection.CreateCommand();
            select.CommandText = "SELECT run_id, round, mechanism, noise_multiplier, sampling_rate, charged_at, "
                + string.Join(", ", s_planColumns.Select(c => c.Name)) + " FROM charges ORDER BY rowid";
            using SqliteDataReader reader = select.ExecuteReader();
            while (reader.Read())
            {
                NoiseMechanismKind mechanism = LocalPolicy.ParseMechanism(reader.GetString(2))
                    ?? throw new InvalidDataException($"{path}: unknown mechanism '{reader.GetString(2)}' in the ledger");
                double z = reader.GetDouble(3);
                // Rows kept before the relation was stored were distributed rounds, now priced at the product's relation.
                Adjacency adjacency = reader.IsDBNull(13) ? PrivacyUnitNames.ProductAdjacency : PrivacyUnitNames.ParseAdjacency(reader.GetString(13))
                    ?? throw new InvalidDataException($"{path}: unknown adjacency '{reader.GetString(13)}' in the ledger");
                PrivacyPlanParameters? plan = reader.IsDBNull(6) ? null : new PrivacyPlanParameters(
                    mechanism == NoiseMechanismKind.CentralGaussian ? PrivacyMechanism.CentralGaussian : PrivacyMechanism.DistributedSkellam,
                    reader.GetInt32(6), reader.GetInt32(9), reader.GetInt32(10), reader.GetInt32(7), reader.GetDouble(8), z, Rounds: 1,
                    Delta: reader.IsDBNull(14) ? PlaceholderDelta : reader.GetDouble(14), Adjacency: adjacency)
                {
                    Beta = reader.GetDouble(11),
                    WrapStdDevs = reader.GetDouble(12),
                };
                ledger._charges.Add(new LocalCharge(reader.GetString(0), reader.GetInt64(1), mechanism, z,
                    reader.GetDouble(4), DateTimeOffset.Parse(reader.GetString(5), CultureInfo.InvariantCulture), plan));
            }
            return ledger;
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    /// <summary>Epsilon at <paramref name="delta"/> of every charge, or of one run's charges, or of those charged after <paramref name="since"/>.</summary>
    internal PrivacySpent Spent(double delta, string? runId = null, LocalCharge? plus = null, DateTimeOffset? since = null)
    {
        var accountant = new RdpAccountant(_orders);
        // Rounds with the same parameters compose as one RDP vector times their count, as the coordinator composes a
        // run's rounds, so both sides reach the same epsilon for the same rounds.
        foreach (var group in Select(runId, plus, since).GroupBy(Key))
        {
            accountant.Compose(RoundRdp(group.Key), group.Count());
        }
        return accountant.GetEpsilon(delta);
    }

    /// <summary>
    /// The worst-case epsilon at <paramref name="delta"/>: every distributed round priced from this machine's own noise
    /// share alone (<see cref="PrivacyPlan.OwnShareRoundRdp"/>), what remains if all other participants were the
    /// coordinator's sybils and left their noise out. Infinity when a charge has no own noise (central Gaussian: the
    /// coordinator adds all of it) or predates the ledger keeping the plan (its threshold is unknown).
    /// </summary>
    internal double WorstCaseEpsilon(double delta, string? runId = null, LocalCharge? plus = null)
    {
        var accountant = new RdpAccountant(_orders);
        foreach (var group in Select(runId, plus, since: null).GroupBy(Key))
        {
            if (OwnShareRdp(group.Key) is not { } rdp)
            {
                return double.PositiveInfinity;
            }
            accountant.Compose(rdp, group.Count());
        }
        return accountant.GetEpsilon(delta).Epsilon;
    }

    private IEnumerable<LocalCharge> Select(string? runId, LocalCharge? plus, DateTimeOffset? since) =>
        _charges.Append(plus).OfType<LocalCharge>().Where(c => (runId is null || c.RunId == runId) && (since is null || c.ChargedAt > since));

    private double[]? OwnShareRdp(object key)
    {
        if (!_ownShareCache.TryGetValue(key, out double[]? rdp))
        {
            rdp = key is PrivacyPlanParameters { Mechanism: PrivacyMechanism.DistributedSkellam } plan
                ? PrivacyPlan.Create(plan, _orders).OwnShareRoundRdp()
                : null;
            _ownShareCache[key] = rdp;
        }
        return rdp;
    }

    // What one round's RDP depends on: the plan (one round; its delta does not enter the RDP), or a legacy row's z.
    private static object Key(LocalCharge charge) =>
        charge.Plan is { } plan ? plan with { NoiseMultiplier = charge.NoiseMultiplier, Rounds = 1, Delta = PlaceholderDelta } : charge.NoiseMultiplier;

    // Rounds of a run share their parameters, so the per-order RDP is computed once per key.
    private double[] RoundRdp(object key)
    {
        if (!_rdpCache.TryGetValue(key, out double[]? rdp))
        {
            rdp = key is PrivacyPlanParameters plan
                ? [.. PrivacyPlan.Create(plan, _orders).RoundRdp]
                // Replace-one doubles the Gaussian's sensitivity, which is its noise multiplier halved; q = 1: the sample is public.
                : RdpAnalysis.SubsampledGaussian(1.0, (double)key / 2, _orders);
            _rdpCache[key] = rdp;
        }
        return rdp;
    }

    // A plan's per-round RDP does not depend on its delta; rows written before the manifest's delta was kept use this one.
    private const double PlaceholderDelta = 1e-5;

    /// <summary>Whether this machine was charged for the round under either unit (client or record).</summary>
    public bool IsCharged(string runId, long round) => ChargedRounds().Any(r => r.RunId == runId && r.Round == round);

    /// <summary>The highest round of <paramref name="runId"/> this machine was charged for under either unit; null when none.</summary>
    public long? LastRound(string runId) => ChargedRounds().Where(r => r.RunId == runId).Select(r => (long?)r.Round).Max();

    /// <summary>Rounds charged (under either unit, each round once) in the 24 hours before <paramref name="now"/>.</summary>
    public int RoundsInDayBefore(DateTimeOffset now) =>
        ChargedRounds().Where(r => r.ChargedAt > now.AddDays(-1) && r.ChargedAt <= now).Select(r => (r.RunId, r.Round)).Distinct().Count();

    private IEnumerable<(string RunId, long Round, DateTimeOffset ChargedAt)> ChargedRounds() =>
        _charges.Select(c => (c.RunId, c.Round, c.ChargedAt)).Concat(_recordCharges.Select(c => (c.RunId, c.Round, c.ChargedAt)));

    /// <summary>Writes the client-level charge durably; a repeated (run, round) is kept once.</summary>
    internal void Record(LocalCharge charge) => Record(charge, null);

    /// <summary>
    /// Writes a round's client-level charge, its record-level charge, or both, durably in one transaction: a round is on
    /// record under every unit it is priced in or under none. A (run, round) already charged is kept once.
    /// </summary>
    internal void Record(LocalCharge? charge, LocalRecordCharge? recordCharge)
    {
        if (charge is null && recordCharge is null)
        {
            throw new ArgumentException("a round is charged under at least one unit");
        }
        string runId = charge?.RunId ?? recordCharge!.RunId;
        long round = charge?.Round ?? recordCharge!.Round;
        if (recordCharge is not null && (recordCharge.RunId != runId || recordCharge.Round != round))
        {
            throw new ArgumentException("the client-level and record-level charges name different rounds");
        }
        if (IsCharged(runId, round))
        {
            return;
        }
        using SqliteTransaction transaction = _connection.BeginTransaction();
        if (charge is not null)
        {
            InsertClientCharge(transaction, charge);
        }
        if (recordCharge is not null)
        {
            InsertRecordCharge(transaction, recordCharge);
        }
        transaction.Commit();
        if (charge is not null)
        {
            _charges.Add(charge);
        }
        if (recordCharge is not null)
        {
            _recordCharges.Add(recordCharge);
        }
    }

    private void InsertClientCharge(SqliteTransaction transaction, LocalCharge charge)
    {
        using SqliteCommand insert = _connection.CreateCommand();
        insert.Transaction = transaction;
        insert.CommandText = """
            INSERT INTO charges (run_id, round, mechanism, noise_multiplier, sampling_rate, charged_at,
                skellam_dimension, skellam_bits, skellam_clip_norm, skellam_max_clients, skellam_min_clients, skellam_beta, skellam_wrap, adjacency, plan_delta)
            VALUES ($run, $round, $mechanism, $z, $q, $at, $d, $b, $c, $n, $t, $beta, $k, $adj, $delta)
            """;
        PrivacyPlanParameters? plan = charge.Plan;
        insert.Parameters.AddWithValue("$d", (object?)plan?.Dimension ?? DBNull.Value);
        insert.Parameters.AddWithValue("$b", (object?)plan?.Bits ?? DBNull.Value);
        insert.Parameters.AddWithValue("$c", (object?)plan?.ClipNorm ?? DBNull.Value);
        insert.Parameters.AddWithValue("$n", (object?)plan?.Clients ?? DBNull.Value);
        insert.Parameters.AddWithValue("$t", (object?)plan?.Threshold ?? DBNull.Value);
        insert.Parameters.AddWithValue("$beta", (object?)plan?.Beta ?? DBNull.Value);
        insert.Parameters.AddWithValue("$k", (object?)plan?.WrapStdDevs ?? DBNull.Value);
        insert.Parameters.AddWithValue("$adj", plan is null ? DBNull.Value : PrivacyUnitNames.Name(plan.Adjacency));
        insert.Parameters.AddWithValue("$delta", (object?)plan?.Delta ?? DBNull.Value);
        insert.Parameters.AddWithValue("$run", charge.RunId);
        insert.Parameters.AddWithValue("$round", charge.Round);
        insert.Parameters.AddWithValue("$mechanism", LocalPolicy.MechanismName(charge.Mechanism));
        insert.Parameters.AddWithValue("$z", charge.NoiseMultiplier);
        insert.Parameters.AddWithValue("$q", charge.SamplingRate);
        insert.Parameters.AddWithValue("$at", charge.ChargedAt.ToString("O", CultureInfo.InvariantCulture));
        insert.ExecuteNonQuery();
    }

    /// <summary>The ledger as JSON-ready rows, for `edge-client ledger show`.</summary>
    public string ToJson(double delta, DateTimeOffset now) => JsonSerializer.Serialize(new
    {
        delta,
        privacy_unit = PrivacyUnitNames.Client,
        adjacency = PrivacyUnitNames.Name(PrivacyUnitNames.ProductAdjacency),
        epsilon_lifetime = Spent(delta).Epsilon,
        // Record-level (DP-SGD) epsilon: one record of this machine's data added or removed, at this machine's record count.
        record_privacy_unit = PrivacyUnitNames.Record,
        record_adjacency = PrivacyUnitNames.Name(PrivacyUnitNames.RecordAdjacency),
        // worst_case_epsilon null: unbounded (a central-noise round, whose noise is the coordinator's alone, or a row
        // written before the ledger kept the round's plan).
        lifetime = new
        {
            epsilon = Spent(delta).Epsilon,
            worst_case_epsilon = Finite(WorstCaseEpsilon(delta)),
            epsilon_last_30_days = Spent(delta, since: now.AddDays(-30)).Epsilon,
            rounds = _charges.Count,
            record_epsilon = RecordSpent(delta).Epsilon,
            record_rounds = _recordCharges.Count,
        },
        runs = ChargedRounds().GroupBy(r => r.RunId).Select(g => new
        {
            run_id = g.Key,
            rounds = _charges.Count(c => c.RunId == g.Key),
            last_round = g.Max(c => c.Round),
            epsilon = Spent(delta, g.Key).Epsilon,
            worst_case_epsilon = Finite(WorstCaseEpsilon(delta, g.Key)),
            record_epsilon = RecordSpent(delta, g.Key).Epsilon,
            record_rounds = _recordCharges.Count(c => c.RunId == g.Key),
        }),
        charges = _charges.Select(c => new
        {
            run_id = c.RunId,
            round = c.Round,
            mechanism = LocalPolicy.MechanismName(c.Mechanism),
            noise_multiplier = c.NoiseMultiplier,
            sampling_rate = c.SamplingRate,
            // What the round was priced from (either mechanism; the key's name predates central plans); null for old rows.
            skellam = c.Plan is { } p
                ? new { dimension = p.Dimension, ring_bits = p.Bits, clip_norm = p.ClipNorm, max_clients = p.Clients, min_clients = p.Threshold }
                : null,
            adjacency = c.Plan is { } a ? PrivacyUnitNames.Name(a.Adjacency) : null,
            charged_at = c.ChargedAt,
        }),
        record_charges = RecordChargesJson(),
    });

    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

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
        foreach ((string name, string type) in s_planColumns.Where(c => !present.Contains(c.Name)))
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
