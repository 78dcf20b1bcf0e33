using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Audit;
using Microsoft.Data.Sqlite;

namespace Federated.Coordinator.State;

/// <summary>A registered edge client as the state store holds it.</summary>
internal sealed record ClientRecord(
    string ClientId,
    string CertificateSha256,
    string ClientVersion,
    string Device,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LastSeenAt,
    bool Available,
    int RoundsParticipated);

/// <summary>A population's budget and what the ledger has charged against it.</summary>
internal sealed record BudgetRecord(string Population, double Epsilon, double Delta, double EpsilonSpent, string SetBy, DateTimeOffset SetAt);

/// <summary>One charge of the privacy ledger.</summary>
internal sealed record LedgerRecord(
    long Sequence,
    string RunId,
    int Round,
    string Population,
    double EpsilonAfter,
    double EpsilonDelta,
    double Delta,
    int Mechanism,
    double NoiseMultiplier,
    double ClipNorm,
    int Participants,
    DateTimeOffset ChargedAt);

/// <summary>A run as the state store holds it: the serialized RunPlan the engineer started, its progress and its latest global adapter.</summary>
internal sealed record RunRecord(
    string RunId,
    byte[] Plan,
    string Population,
    Protos.V1.RunState State,
    double PlannedEpsilon,
    double NoiseMultiplier,
    int CurrentRound,
    string AdapterSha256,
    string Detail,
    string CreatedBy,
    DateTimeOffset CreatedAt,
    DateTimeOffset UpdatedAt);

/// <summary>What a retention pass may remove: finished rounds' participant rows and adapters no run points at any more.</summary>
internal sealed record PrunePlan(DateTimeOffset Cutoff, IReadOnlyList<(string RunId, int Round)> Rounds, IReadOnlyList<string> Adapters)
{
    public bool IsEmpty => Rounds.Count == 0 && Adapters.Count == 0;
}

/// <summary>How far a run got: its highest round number, the rounds released (charged) and the epsilon they spent.</summary>
internal sealed record RunProgress(int LastRound, int ReleasedRounds, double EpsilonSpent);

/// <summary>
/// The coordinator's durable state in one SQLite file (WAL, synchronous=FULL): every method commits its
/// transaction, including the audit entry it appends, before it returns, so nothing is acknowledged unwritten.
/// </summary>
internal sealed class CoordinatorState : IDisposable
{
    public const string DefaultPopulation = "default";

    private readonly SqliteConnection _connection;
    private readonly ECDsa _signingKey;
    private readonly string _signerPem;
    private readonly TimeProvider _time;
    private readonly Lock _gate = new();

    // Declines that arrived before the round's rows were written (the round is opened in memory, then recorded):
    // StartRound writes these participants as declined. Guarded by _gate.
    private readonly HashSet<(string RunId, int Round, string ClientId)> _earlyDeclines = [];

    private CoordinatorState(SqliteConnection connection, ECDsa signingKey, string signerPem, TimeProvider time)
    {
        _connection = connection;
        _signingKey = signingKey;
        _signerPem = signerPem;
        _time = time;
    }

    /// <summary>Opens (creating if needed) and migrates the database; <paramref name="signer"/>'s key signs the audit head.</summary>
    public static CoordinatorState Open(string path, X509Certificate2 signer, TimeProvider time)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(signer);
        ECDsa signingKey = signer.GetECDsaPrivateKey()
            ?? throw new ArgumentException("the audit signer certificate must carry its ECDSA private key", nameof(signer));
        ArgumentNullException.ThrowIfNull(time);
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
        }.ToString());
        connection.Open();
        try
        {
            Execute(connection, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;");
            Migrate(connection);
        }
        catch
        {
            connection.Dispose();
            signingKey.Dispose();
            throw;
        }
        return new CoordinatorState(connection, signingKey, signer.ExportCertificatePem(), time);
    }

    /// <summary>Opens an existing database read-only (for verification tools); nothing is migrated or written.</summary>
    public static SqliteConnection OpenReadOnly(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"state file '{path}' does not exist");
        }
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadOnly,
            Pooling = false,
        }.ToString());
        connection.Open();
        return connection;
    }

    public int SchemaVersion
    {
        get
        {
            lock (_gate)
            {
                return ReadUserVersion(_connection);
            }
        }
    }

    public void Dispose()
    {
        _connection.Dispose();
        _signingKey.Dispose();
    }

    /// <summary>Records a client's registration; the first registration and a changed certificate are audited.</summary>
    public ClientRecord RegisterClient(string clientId, string certificateSha256, string clientVersion, string device)
    {
        ArgumentException.ThrowIfNullOrEmpty(clientId);
        ArgumentException.ThrowIfNullOrEmpty(certificateSha256);
        ArgumentNullException.ThrowIfNull(clientVersion);
        ArgumentNullException.ThrowIfNull(device);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            string now = Format(_time.GetUtcNow());
            string? previousCertificate = Scalar<string>(transaction, "SELECT certificate_sha256 FROM clients WHERE client_id = $id", ("$id", clientId));
            Execute(transaction,
                """
                INSERT INTO clients (client_id, certificate_sha256, client_version, device, registered_at, last_seen_at, available)
                VALUES ($id, $cert, $version, $device, $now, $now, 1)
                ON CONFLICT (client_id) DO UPDATE SET certificate_sha256 = $cert, client_version = $version, device = $device, last_seen_at = $now, available = 1
                """,
                ("$id", clientId), ("$cert", certificateSha256), ("$version", clientVersion), ("$device", device), ("$now", now));
            if (previousCertificate != certificateSha256)
            {
                AppendAudit(transaction, clientId, previousCertificate is null ? "client.register" : "client.certificate_changed",
                    new Dictionary<string, string> { ["client_id"] = clientId, ["certificate_sha256"] = certificateSha256 });
            }
            transaction.Commit();
            return ReadClients(transaction: null, clientId).Single();
        }
    }

    /// <summary>Updates a registered client's liveness; false when the client never registered.</summary>
    public bool Heartbeat(string clientId, bool available)
    {
        ArgumentException.ThrowIfNullOrEmpty(clientId);
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText = "UPDATE clients SET last_seen_at = $now, available = $available WHERE client_id = $id";
            command.Parameters.AddWithValue("$now", Format(_time.GetUtcNow()));
            command.Parameters.AddWithValue("$available", available ? 1 : 0);
            command.Parameters.AddWithValue("$id", clientId);
            return command.ExecuteNonQuery() == 1;
        }
    }

    public IReadOnlyList<ClientRecord> ListClients(TimeSpan? seenWithin = null)
    {
        lock (_gate)
        {
            IReadOnlyList<ClientRecord> all = ReadClients(transaction: null, clientId: null);
            if (seenWithin is not { } window)
            {
                return all;
            }
            DateTimeOffset cutoff = _time.GetUtcNow() - window;
            return [.. all.Where(c => c.LastSeenAt >= cutoff)];
        }
    }

    /// <summary>Sets a population's budget; audited with the officer's identity.</summary>
    public BudgetRecord SetBudget(string population, double epsilon, double delta, string actor)
    {
        ArgumentException.ThrowIfNullOrEmpty(population);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        if (!double.IsFinite(epsilon) || epsilon <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be a finite number > 0");
        }
        if (!double.IsFinite(delta) || delta <= 0 || delta >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(delta), delta, "delta must be in (0, 1)");
        }
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            Execute(transaction,
                """
                INSERT INTO budgets (population, epsilon, delta, set_by, set_at) VALUES ($p, $e, $d, $by, $at)
                ON CONFLICT (population) DO UPDATE SET epsilon = $e, delta = $d, set_by = $by, set_at = $at
                """,
                ("$p", population), ("$e", epsilon), ("$d", delta), ("$by", actor), ("$at", Format(_time.GetUtcNow())));
            AppendAudit(transaction, actor, "budget.set", new Dictionary<string, string>
            {
                ["population"] = population,
                ["epsilon"] = epsilon.ToString("R", CultureInfo.InvariantCulture),
                ["delta"] = delta.ToString("R", CultureInfo.InvariantCulture),
            });
            transaction.Commit();
        }
        return GetBudget(population)!;
    }

    /// <summary>The population's budget with the epsilon charged so far; null when none was set.</summary>
    public BudgetRecord? GetBudget(string population)
    {
        ArgumentException.ThrowIfNullOrEmpty(population);
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText =
                """
                SELECT b.population, b.epsilon, b.delta, b.set_by, b.set_at,
                       (SELECT COALESCE(SUM(l.epsilon_delta), 0) FROM ledger l WHERE l.population = b.population)
                FROM budgets b WHERE b.population = $p
                """;
            command.Parameters.AddWithValue("$p", population);
            using SqliteDataReader reader = command.ExecuteReader();
            if (!reader.Read())
            {
                return null;
            }
            return new BudgetRecord(reader.GetString(0), reader.GetDouble(1), reader.GetDouble(2), reader.GetDouble(5), reader.GetString(3), Parse(reader.GetString(4)));
        }
    }

    /// <summary>Charges one released round to the ledger; a second charge for the same round fails (UNIQUE).</summary>
    public LedgerRecord ChargeLedger(LedgerRecord charge, string actor)
    {
        ArgumentNullException.ThrowIfNull(charge);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            string at = Format(_time.GetUtcNow());
            Execute(transaction,
                """
                INSERT INTO ledger (run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at)
                VALUES ($run, $round, $p, $after, $d_eps, $delta, $mech, $z, $c, $n, $at)
                """,
                ("$run", charge.RunId), ("$round", charge.Round), ("$p", charge.Population), ("$after", charge.EpsilonAfter),
                ("$d_eps", charge.EpsilonDelta), ("$delta", charge.Delta), ("$mech", charge.Mechanism), ("$z", charge.NoiseMultiplier),
                ("$c", charge.ClipNorm), ("$n", charge.Participants), ("$at", at));
            long sequence = Scalar<long>(transaction, "SELECT last_insert_rowid()");
            AppendAudit(transaction, actor, "ledger.charge", new Dictionary<string, string>
            {
                ["run_id"] = charge.RunId,
                ["round"] = charge.Round.ToString(CultureInfo.InvariantCulture),
                ["population"] = charge.Population,
                ["epsilon_after"] = charge.EpsilonAfter.ToString("R", CultureInfo.InvariantCulture),
                ["epsilon_delta"] = charge.EpsilonDelta.ToString("R", CultureInfo.InvariantCulture),
            });
            transaction.Commit();
            return charge with { Sequence = sequence, ChargedAt = Parse(at) };
        }
    }

    public IReadOnlyList<LedgerRecord> GetLedger(string? runId, string? population)
    {
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText =
                """
                SELECT sequence, run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at
                FROM ledger WHERE ($run = '' OR run_id = $run) AND ($p = '' OR population = $p) ORDER BY sequence
                """;
            command.Parameters.AddWithValue("$run", runId ?? "");
            command.Parameters.AddWithValue("$p", population ?? "");
            using SqliteDataReader reader = command.ExecuteReader();
            var entries = new List<LedgerRecord>();
            while (reader.Read())
            {
                entries.Add(new LedgerRecord(reader.GetInt64(0), reader.GetString(1), reader.GetInt32(2), reader.GetString(3), reader.GetDouble(4),
                    reader.GetDouble(5), reader.GetDouble(6), reader.GetInt32(7), reader.GetDouble(8), reader.GetDouble(9), reader.GetInt32(10), Parse(reader.GetString(11))));
            }
            return entries;
        }
    }

    /// <summary>Records an accepted run (state PENDING) and audits who started it.</summary>
    public void CreateRun(string runId, byte[] plan, string population, double plannedEpsilon, double noiseMultiplier, string adapterSha256, string actor)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentException.ThrowIfNullOrEmpty(population);
        ArgumentNullException.ThrowIfNull(adapterSha256);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            string now = Format(_time.GetUtcNow());
            Execute(transaction,
                """
                INSERT INTO runs (run_id, plan, population, state, planned_epsilon, noise_multiplier, current_round, adapter_sha256, detail, created_by, created_at, updated_at)
                VALUES ($run, $plan, $p, $state, $eps, $z, 0, $adapter, '', $by, $now, $now)
                """,
                ("$run", runId), ("$plan", plan), ("$p", population), ("$state", (int)Protos.V1.RunState.Pending), ("$eps", plannedEpsilon),
                ("$z", noiseMultiplier), ("$adapter", adapterSha256), ("$by", actor), ("$now", now));
            AppendAudit(transaction, actor, "run.start", new Dictionary<string, string>
            {
                ["run_id"] = runId,
                ["population"] = population,
                ["planned_epsilon"] = plannedEpsilon.ToString("R", CultureInfo.InvariantCulture),
                ["noise_multiplier"] = noiseMultiplier.ToString("R", CultureInfo.InvariantCulture),
                ["plan_sha256"] = Convert.ToHexStringLower(SHA256.HashData(plan)),
            });
            transaction.Commit();
        }
    }

    /// <summary>A run by id; null when unknown.</summary>
    public RunRecord? GetRun(string runId)
    {
        ArgumentNullException.ThrowIfNull(runId);
        return ReadRuns("run_id = $run", ("$run", runId)).SingleOrDefault();
    }

    /// <summary>The runs that had not ended (PENDING or RUNNING) when the coordinator last stopped, oldest first.</summary>
    public IReadOnlyList<RunRecord> ListUnfinishedRuns() =>
        ReadRuns("state IN ($pending, $running)", ("$pending", (int)Protos.V1.RunState.Pending), ("$running", (int)Protos.V1.RunState.Running));

    /// <summary>A run's highest round number, its released rounds and the epsilon after the last of them (from the ledger).</summary>
    public RunProgress GetRunProgress(string runId)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText =
                """
                SELECT (SELECT COALESCE(MAX(round), 0) FROM rounds WHERE run_id = $run),
                       (SELECT COUNT(*) FROM ledger WHERE run_id = $run),
                       (SELECT COALESCE((SELECT epsilon_after FROM ledger WHERE run_id = $run ORDER BY sequence DESC LIMIT 1), 0))
                """;
            command.Parameters.AddWithValue("$run", runId);
            using SqliteDataReader reader = command.ExecuteReader();
            reader.Read();
            return new RunProgress(reader.GetInt32(0), reader.GetInt32(1), reader.GetDouble(2));
        }
    }

    /// <summary>
    /// Marks every round of the run that had not ended as FAILED (a coordinator that stopped mid-round released
    /// nothing from it and charged nothing), each audited; returns the rounds so marked.
    /// </summary>
    public IReadOnlyList<int> FailInterruptedRounds(string runId, string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentException.ThrowIfNullOrEmpty(reason);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            var failed = new List<int>();
            using (SqliteCommand command = _connection.CreateCommand())
            {
                command.Transaction = transaction;
                command.CommandText =
                    "UPDATE rounds SET stage = $failed, ended_at = $now WHERE run_id = $run AND stage NOT IN ($done, $failed) RETURNING round";
                command.Parameters.AddWithValue("$failed", (int)Protos.V1.RoundStage.Failed);
                command.Parameters.AddWithValue("$done", (int)Protos.V1.RoundStage.Completed);
                command.Parameters.AddWithValue("$now", Format(_time.GetUtcNow()));
                command.Parameters.AddWithValue("$run", runId);
                using SqliteDataReader reader = command.ExecuteReader();
                while (reader.Read())
                {
                    failed.Add(reader.GetInt32(0));
                }
            }
            foreach (int round in failed.Order())
            {
                AppendAudit(transaction, "coordinator", "round.fail", new Dictionary<string, string>
                {
                    ["run_id"] = runId,
                    ["round"] = round.ToString(CultureInfo.InvariantCulture),
                    ["reason"] = reason,
                });
            }
            transaction.Commit();
            return failed;
        }
    }

    /// <summary>Records a round's start and its selected participants (status "selected"), audited with the participant list.</summary>
    public void StartRound(string runId, int round, IReadOnlyDictionary<string, int> participants, string adapterBefore)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentOutOfRangeException.ThrowIfLessThan(round, 1);
        ArgumentNullException.ThrowIfNull(participants);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            string now = Format(_time.GetUtcNow());
            Execute(transaction,
                "INSERT INTO rounds (run_id, round, stage, selected, survivors, adapter_sha256_before, started_at) VALUES ($run, $round, $stage, $n, 0, $adapter, $now)",
                ("$run", runId), ("$round", round), ("$stage", (int)Protos.V1.RoundStage.Manifest), ("$n", participants.Count), ("$adapter", adapterBefore), ("$now", now));
            foreach ((string clientId, int index) in participants)
            {
                string status = _earlyDeclines.Remove((runId, round, clientId)) ? "declined" : "selected";
                Execute(transaction,
                    "INSERT INTO participants (run_id, round, client_id, participant_index, status, updated_at) VALUES ($run, $round, $id, $i, $status, $now)",
                    ("$run", runId), ("$round", round), ("$id", clientId), ("$i", index), ("$status", status), ("$now", now));
            }
            Execute(transaction, "UPDATE runs SET state = $state, current_round = $round, updated_at = $now WHERE run_id = $run",
                ("$state", (int)Protos.V1.RunState.Running), ("$round", round), ("$now", now), ("$run", runId));
            AppendAudit(transaction, "coordinator", "round.start", new Dictionary<string, string>
            {
                ["run_id"] = runId,
                ["round"] = round.ToString(CultureInfo.InvariantCulture),
                ["participants"] = string.Join(",", participants.OrderBy(p => p.Value).Select(p => p.Key)),
            });
            transaction.Commit();
        }
    }

    /// <summary>Sets a participant's status in a round ("uploaded", "dropped"); a recorded decline is final and kept.</summary>
    public void SetParticipantStatus(string runId, int round, string clientId, string status)
    {
        ArgumentException.ThrowIfNullOrEmpty(status);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            Execute(transaction, "UPDATE participants SET status = $s, updated_at = $now WHERE run_id = $run AND round = $round AND client_id = $id AND status <> 'declined'",
                ("$s", status), ("$now", Format(_time.GetUtcNow())), ("$run", runId), ("$round", round), ("$id", clientId));
            transaction.Commit();
        }
    }

    /// <summary>
    /// Records that a selected participant declined a round: its row becomes "declined" and the audit chain names the
    /// reason and the client's rule, in one transaction. False when no participant row was there to mark yet: the audit
    /// entry is appended anyway, and a later <see cref="StartRound"/> for that round writes the participant as declined.
    /// </summary>
    public bool RecordDecline(string runId, int round, string clientId, string reason, string rule, string detail)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentException.ThrowIfNullOrEmpty(clientId);
        ArgumentException.ThrowIfNullOrEmpty(reason);
        ArgumentNullException.ThrowIfNull(rule);
        ArgumentNullException.ThrowIfNull(detail);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            int updated = Scalar<int>(transaction,
                "UPDATE participants SET status = 'declined', updated_at = $now WHERE run_id = $run AND round = $round AND client_id = $id RETURNING 1",
                ("$now", Format(_time.GetUtcNow())), ("$run", runId), ("$round", round), ("$id", clientId));
            // The audit entry is written either way: it is the durable record even if the round's rows are not yet in.
            AppendAudit(transaction, clientId, "round.decline", new Dictionary<string, string>
            {
                ["run_id"] = runId,
                ["round"] = round.ToString(CultureInfo.InvariantCulture),
                ["client_id"] = clientId,
                ["reason"] = reason,
                ["rule"] = rule,
                ["detail"] = detail,
            });
            transaction.Commit();
            if (updated != 1)
            {
                _earlyDeclines.Add((runId, round, clientId));
            }
            return updated == 1;
        }
    }

    /// <summary>A round's participants and their status ("selected", "declined", "uploaded", "dropped"), by client id.</summary>
    public IReadOnlyDictionary<string, string> GetParticipants(string runId, int round)
    {
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText = "SELECT client_id, status FROM participants WHERE run_id = $run AND round = $round";
            command.Parameters.AddWithValue("$run", runId);
            command.Parameters.AddWithValue("$round", round);
            using SqliteDataReader reader = command.ExecuteReader();
            var participants = new Dictionary<string, string>(StringComparer.Ordinal);
            while (reader.Read())
            {
                participants[reader.GetString(0)] = reader.GetString(1);
            }
            return participants;
        }
    }

    /// <summary>
    /// Completes a round in one transaction: the ledger charge (UNIQUE per round, so never twice), the round's new
    /// adapter and survivor count, the run's progress and the audit entry. Nothing is released before this returns.
    /// </summary>
    public LedgerRecord CompleteRound(LedgerRecord charge, string adapterAfter)
    {
        ArgumentNullException.ThrowIfNull(charge);
        ArgumentException.ThrowIfNullOrEmpty(adapterAfter);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            string now = Format(_time.GetUtcNow());
            int updated = Scalar<int>(transaction,
                "UPDATE rounds SET stage = $stage, survivors = $n, adapter_sha256_after = $adapter, ended_at = $now WHERE run_id = $run AND round = $round AND stage NOT IN ($done, $failed) RETURNING 1",
                ("$stage", (int)Protos.V1.RoundStage.Completed), ("$n", charge.Participants), ("$adapter", adapterAfter), ("$now", now),
                ("$run", charge.RunId), ("$round", charge.Round), ("$done", (int)Protos.V1.RoundStage.Completed), ("$failed", (int)Protos.V1.RoundStage.Failed));
            if (updated != 1)
            {
                throw new InvalidOperationException($"round {charge.Round} of run {charge.RunId} is not in progress; it cannot be completed");
            }
            Execute(transaction,
                """
                INSERT INTO ledger (run_id, round, population, epsilon_after, epsilon_delta, delta, mechanism, noise_multiplier, clip_norm, participants, charged_at)
                VALUES ($run, $round, $p, $after, $d_eps, $delta, $mech, $z, $c, $n, $at)
                """,
                ("$run", charge.RunId), ("$round", charge.Round), ("$p", charge.Population), ("$after", charge.EpsilonAfter),
                ("$d_eps", charge.EpsilonDelta), ("$delta", charge.Delta), ("$mech", charge.Mechanism), ("$z", charge.NoiseMultiplier),
                ("$c", charge.ClipNorm), ("$n", charge.Participants), ("$at", now));
            long sequence = Scalar<long>(transaction, "SELECT last_insert_rowid()");
            Execute(transaction, "UPDATE runs SET adapter_sha256 = $adapter, updated_at = $now WHERE run_id = $run",
                ("$adapter", adapterAfter), ("$now", now), ("$run", charge.RunId));
            AppendAudit(transaction, "coordinator", "round.complete", new Dictionary<string, string>
            {
                ["run_id"] = charge.RunId,
                ["round"] = charge.Round.ToString(CultureInfo.InvariantCulture),
                ["survivors"] = charge.Participants.ToString(CultureInfo.InvariantCulture),
                ["adapter_sha256"] = adapterAfter,
                ["epsilon_after"] = charge.EpsilonAfter.ToString("R", CultureInfo.InvariantCulture),
            });
            transaction.Commit();
            return charge with { Sequence = sequence, ChargedAt = Parse(now) };
        }
    }

    /// <summary>Ends a round without a release: no ledger charge, the reason audited.</summary>
    public void FailRound(string runId, int round, string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(reason);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            string now = Format(_time.GetUtcNow());
            Execute(transaction, "UPDATE rounds SET stage = $stage, ended_at = $now WHERE run_id = $run AND round = $round",
                ("$stage", (int)Protos.V1.RoundStage.Failed), ("$now", now), ("$run", runId), ("$round", round));
            AppendAudit(transaction, "coordinator", "round.fail", new Dictionary<string, string>
            {
                ["run_id"] = runId,
                ["round"] = round.ToString(CultureInfo.InvariantCulture),
                ["reason"] = reason,
            });
            transaction.Commit();
        }
    }

    /// <summary>Records a run's end (completed, aborted or failed) with the reason, audited.</summary>
    public void EndRun(string runId, Protos.V1.RunState runState, string detail, string actor)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(detail);
        ArgumentException.ThrowIfNullOrEmpty(actor);
        if (runState is not (Protos.V1.RunState.Completed or Protos.V1.RunState.Aborted or Protos.V1.RunState.Failed))
        {
            throw new ArgumentOutOfRangeException(nameof(runState), runState, "a run ends COMPLETED, ABORTED or FAILED");
        }
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            Execute(transaction, "UPDATE runs SET state = $state, detail = $detail, updated_at = $now WHERE run_id = $run",
                ("$state", (int)runState), ("$detail", detail), ("$now", Format(_time.GetUtcNow())), ("$run", runId));
            AppendAudit(transaction, actor, "run.end", new Dictionary<string, string>
            {
                ["run_id"] = runId,
                ["state"] = runState.ToString(),
                ["detail"] = detail,
            });
            transaction.Commit();
        }
    }

    /// <summary>A round's stage as recorded (RoundStage numbers); null when unknown.</summary>
    public Protos.V1.RoundStage? GetRoundStage(string runId, int round)
    {
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText = "SELECT stage FROM rounds WHERE run_id = $run AND round = $round";
            command.Parameters.AddWithValue("$run", runId);
            command.Parameters.AddWithValue("$round", round);
            object? stage = command.ExecuteScalar();
            return stage is null ? null : (Protos.V1.RoundStage)Convert.ToInt32(stage, CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Records a stored adapter (its bytes are already durable on disk) and audits it.</summary>
    public void RecordAdapter(string sha256, string runId, int round, long sizeBytes, byte[] signature, string actor)
    {
        ArgumentException.ThrowIfNullOrEmpty(sha256);
        ArgumentNullException.ThrowIfNull(runId);
        ArgumentNullException.ThrowIfNull(signature);
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            Execute(transaction,
                "INSERT INTO adapters (sha256, run_id, round, size_bytes, signature, created_at) VALUES ($h, $run, $round, $size, $sig, $at) ON CONFLICT (sha256) DO NOTHING",
                ("$h", sha256), ("$run", runId), ("$round", round), ("$size", sizeBytes), ("$sig", signature), ("$at", Format(_time.GetUtcNow())));
            AppendAudit(transaction, actor, "adapter.store", new Dictionary<string, string>
            {
                ["sha256"] = sha256,
                ["run_id"] = runId,
                ["round"] = round.ToString(CultureInfo.InvariantCulture),
                ["size_bytes"] = sizeBytes.ToString(CultureInfo.InvariantCulture),
            });
            transaction.Commit();
        }
    }

    /// <summary>A stored adapter's size and signature; null when unknown.</summary>
    public (long SizeBytes, byte[] Signature)? GetAdapter(string sha256)
    {
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            // A round's adapter is served only once the transaction that completed (and charged) its round committed;
            // an initial adapter (round 0) carries no data and is served from the start.
            command.CommandText =
                """
                SELECT a.size_bytes, a.signature FROM adapters a WHERE a.sha256 = $h
                AND (a.round = 0 OR EXISTS (SELECT 1 FROM rounds r WHERE r.adapter_sha256_after = a.sha256 AND r.stage = $done))
                """;
            command.Parameters.AddWithValue("$h", sha256);
            command.Parameters.AddWithValue("$done", (int)Protos.V1.RoundStage.Completed);
            using SqliteDataReader reader = command.ExecuteReader();
            return reader.Read() ? (reader.GetInt64(0), (byte[])reader.GetValue(1)) : null;
        }
    }

    /// <summary>
    /// Finds what retention may remove before <paramref name="cutoff"/>: participant rows of rounds that ended
    /// (completed or failed) before it, and adapters stored before it that are neither a run's current adapter (the
    /// latest of a running run, the final one of an ended run, which export needs) nor the start of a round in progress.
    /// </summary>
    public PrunePlan PlanPrune(DateTimeOffset cutoff)
    {
        string before = Format(cutoff);
        int done = (int)Protos.V1.RoundStage.Completed, failed = (int)Protos.V1.RoundStage.Failed;
        lock (_gate)
        {
            var rounds = new List<(string, int)>();
            using (SqliteCommand command = _connection.CreateCommand())
            {
                command.CommandText =
                    """
                    SELECT r.run_id, r.round FROM rounds r
                    WHERE r.stage IN ($done, $failed) AND r.ended_at IS NOT NULL AND r.ended_at < $before
                      AND EXISTS (SELECT 1 FROM participants p WHERE p.run_id = r.run_id AND p.round = r.round)
                    ORDER BY r.run_id, r.round
                    """;
                command.Parameters.AddWithValue("$done", done);
                command.Parameters.AddWithValue("$failed", failed);
                command.Parameters.AddWithValue("$before", before);
                using SqliteDataReader reader = command.ExecuteReader();
                while (reader.Read())
                {
                    rounds.Add((reader.GetString(0), reader.GetInt32(1)));
                }
            }
            var adapters = new List<string>();
            using (SqliteCommand command = _connection.CreateCommand())
            {
                command.CommandText = PrunableAdaptersSql + " ORDER BY a.sha256";
                command.Parameters.AddWithValue("$done", done);
                command.Parameters.AddWithValue("$failed", failed);
                command.Parameters.AddWithValue("$before", before);
                using SqliteDataReader reader = command.ExecuteReader();
                while (reader.Read())
                {
                    adapters.Add(reader.GetString(0));
                }
            }
            return new PrunePlan(cutoff, rounds, adapters);
        }
    }

    /// <summary>
    /// Deletes a plan's participant rows and adapter rows (re-checking that each adapter is still prunable) and appends
    /// one "retention.prune" audit entry naming them, in one transaction. Earlier audit entries, the rounds table and
    /// the privacy ledger are untouched, so the chain still verifies and every hash and charge stays on record.
    /// </summary>
    /// <returns>The adapters whose rows were removed (the caller deletes their files).</returns>
    public IReadOnlyList<string> Prune(PrunePlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        int done = (int)Protos.V1.RoundStage.Completed, failed = (int)Protos.V1.RoundStage.Failed;
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            int participantRows = 0;
            foreach ((string runId, int round) in plan.Rounds)
            {
                participantRows += Scalar<int>(transaction,
                    "SELECT COUNT(*) FROM participants WHERE run_id = $run AND round = $round", ("$run", runId), ("$round", round));
                Execute(transaction, "DELETE FROM participants WHERE run_id = $run AND round = $round", ("$run", runId), ("$round", round));
            }
            var removed = new List<string>();
            foreach (string sha256 in plan.Adapters)
            {
                // Re-checked inside the transaction: a run may have come to point at it since the plan was made.
                if (Scalar<string>(transaction, PrunableAdaptersSql + " AND a.sha256 = $h",
                    ("$done", done), ("$failed", failed), ("$before", Format(plan.Cutoff)), ("$h", sha256)) == sha256)
                {
                    Execute(transaction, "DELETE FROM adapters WHERE sha256 = $h", ("$h", sha256));
                    removed.Add(sha256);
                }
            }
            AppendAudit(transaction, "coordinator", "retention.prune", new Dictionary<string, string>
            {
                ["cutoff"] = Format(plan.Cutoff),
                ["rounds"] = string.Join(",", plan.Rounds.Select(r => r.RunId + ":" + r.Round.ToString(CultureInfo.InvariantCulture))),
                ["participant_rows"] = participantRows.ToString(CultureInfo.InvariantCulture),
                ["adapters"] = string.Join(",", removed),
            });
            transaction.Commit();
            return removed;
        }
    }

    private const string PrunableAdaptersSql =
        """
        SELECT a.sha256 FROM adapters a
        WHERE a.created_at < $before
          AND a.sha256 NOT IN (SELECT adapter_sha256 FROM runs)
          AND NOT EXISTS (SELECT 1 FROM rounds r WHERE r.stage NOT IN ($done, $failed) AND r.adapter_sha256_before = a.sha256)
        """;

    /// <summary>Appends an audit entry in its own transaction (for actions that change nothing else).</summary>
    public AuditRecord Audit(string actor, string action, IReadOnlyDictionary<string, string> details)
    {
        lock (_gate)
        {
            using SqliteTransaction transaction = _connection.BeginTransaction();
            AuditRecord record = AppendAudit(transaction, actor, action, details);
            transaction.Commit();
            return record;
        }
    }

    public (IReadOnlyList<AuditRecord> Entries, AuditHead? Head) ReadAudit(long fromSequence, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(fromSequence, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        lock (_gate)
        {
            return (ReadAuditRecords(_connection, fromSequence, limit), ReadAuditHead(_connection));
        }
    }

    public static IReadOnlyList<AuditRecord> ReadAuditRecords(SqliteConnection connection, long fromSequence = 1, int limit = int.MaxValue)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT sequence, canonical_json, hash FROM audit WHERE sequence >= $from ORDER BY sequence LIMIT $limit";
        command.Parameters.AddWithValue("$from", fromSequence);
        command.Parameters.AddWithValue("$limit", limit);
        using SqliteDataReader reader = command.ExecuteReader();
        var records = new List<AuditRecord>();
        while (reader.Read())
        {
            records.Add(new AuditRecord(reader.GetInt64(0), reader.GetString(1), reader.GetString(2)));
        }
        return records;
    }

    public static AuditHead? ReadAuditHead(SqliteConnection connection)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT sequence, hash, signature, signer FROM audit_head WHERE id = 1";
        using SqliteDataReader reader = command.ExecuteReader();
        return reader.Read() ? new AuditHead(reader.GetInt64(0), reader.GetString(1), (byte[])reader.GetValue(2), reader.GetString(3)) : null;
    }

    private AuditRecord AppendAudit(SqliteTransaction transaction, string actor, string action, IReadOnlyDictionary<string, string> details)
    {
        long sequence;
        string previous;
        using (SqliteCommand command = transaction.Connection!.CreateCommand())
        {
            command.Transaction = transaction;
            command.CommandText = "SELECT sequence, hash FROM audit ORDER BY sequence DESC LIMIT 1";
            using SqliteDataReader reader = command.ExecuteReader();
            (sequence, previous) = reader.Read() ? (reader.GetInt64(0) + 1, reader.GetString(1)) : (1L, AuditChain.GenesisHash);
        }
        string json = AuditChain.Canonicalize(sequence, _time.GetUtcNow(), actor, action, details, previous);
        string hash = AuditChain.Hash(json);
        Execute(transaction, "INSERT INTO audit (sequence, canonical_json, hash) VALUES ($s, $j, $h)", ("$s", sequence), ("$j", json), ("$h", hash));
        byte[] signature = AuditChain.SignHead(_signingKey, sequence, hash);
        Execute(transaction,
            "INSERT INTO audit_head (id, sequence, hash, signature, signer) VALUES (1, $s, $h, $sig, $pem) ON CONFLICT (id) DO UPDATE SET sequence = $s, hash = $h, signature = $sig, signer = $pem",
            ("$s", sequence), ("$h", hash), ("$sig", signature), ("$pem", _signerPem));
        return new AuditRecord(sequence, json, hash);
    }

    private IReadOnlyList<RunRecord> ReadRuns(string where, params (string Name, object Value)[] parameters)
    {
        lock (_gate)
        {
            using SqliteCommand command = _connection.CreateCommand();
            command.CommandText =
                $"SELECT run_id, plan, population, state, planned_epsilon, noise_multiplier, current_round, adapter_sha256, detail, created_by, created_at, updated_at FROM runs WHERE {where} ORDER BY created_at, run_id";
            foreach ((string name, object value) in parameters)
            {
                command.Parameters.AddWithValue(name, value);
            }
            using SqliteDataReader reader = command.ExecuteReader();
            var runs = new List<RunRecord>();
            while (reader.Read())
            {
                runs.Add(new RunRecord(reader.GetString(0), (byte[])reader.GetValue(1), reader.GetString(2), (Protos.V1.RunState)reader.GetInt32(3),
                    reader.GetDouble(4), reader.GetDouble(5), reader.GetInt32(6), reader.GetString(7), reader.GetString(8), reader.GetString(9),
                    Parse(reader.GetString(10)), Parse(reader.GetString(11))));
            }
            return runs;
        }
    }

    private IReadOnlyList<ClientRecord> ReadClients(SqliteTransaction? transaction, string? clientId)
    {
        using SqliteCommand command = _connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText =
            """
            SELECT c.client_id, c.certificate_sha256, c.client_version, c.device, c.registered_at, c.last_seen_at, c.available,
                   (SELECT COUNT(*) FROM participants p WHERE p.client_id = c.client_id AND p.status = 'uploaded')
            FROM clients c WHERE ($id = '' OR c.client_id = $id) ORDER BY c.client_id
            """;
        command.Parameters.AddWithValue("$id", clientId ?? "");
        using SqliteDataReader reader = command.ExecuteReader();
        var clients = new List<ClientRecord>();
        while (reader.Read())
        {
            clients.Add(new ClientRecord(reader.GetString(0), reader.GetString(1), reader.GetString(2), reader.GetString(3),
                Parse(reader.GetString(4)), Parse(reader.GetString(5)), reader.GetInt32(6) != 0, reader.GetInt32(7)));
        }
        return clients;
    }

    private static void Migrate(SqliteConnection connection)
    {
        int version = ReadUserVersion(connection);
        if (version > StateSchema.Migrations.Length)
        {
            throw new InvalidOperationException(
                $"state schema version {version} is newer than this coordinator supports ({StateSchema.Migrations.Length}); upgrade the coordinator");
        }
        for (int i = version; i < StateSchema.Migrations.Length; i++)
        {
            using SqliteTransaction transaction = connection.BeginTransaction();
            Execute(transaction, StateSchema.Migrations[i]);
            Execute(transaction, $"PRAGMA user_version = {i + 1}");
            transaction.Commit();
        }
    }

    private static int ReadUserVersion(SqliteConnection connection)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "PRAGMA user_version";
        return Convert.ToInt32(command.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static void Execute(SqliteTransaction transaction, string sql, params (string Name, object Value)[] parameters)
    {
        using SqliteCommand command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach ((string name, object value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }
        command.ExecuteNonQuery();
    }

    private static T? Scalar<T>(SqliteTransaction transaction, string sql, params (string Name, object Value)[] parameters)
    {
        using SqliteCommand command = transaction.Connection!.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        foreach ((string name, object value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }
        object? result = command.ExecuteScalar();
        return result is null or DBNull ? default : (T)Convert.ChangeType(result, typeof(T), CultureInfo.InvariantCulture);
    }

    private static string Format(DateTimeOffset time) => time.UtcDateTime.ToString("O", CultureInfo.InvariantCulture);

    private static DateTimeOffset Parse(string text) => DateTimeOffset.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);
}
