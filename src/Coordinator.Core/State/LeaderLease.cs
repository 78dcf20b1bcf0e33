using System.Globalization;
using System.Security.Cryptography;
using Npgsql;

namespace Federated.Coordinator.State;

/// <summary>Who holds the leader lease as the database last said: the holder's id and address, its fencing token, and whether it has expired.</summary>
internal sealed record LeaseHolder(string Holder, string Address, long Token, bool Expired);

/// <summary>What <see cref="LeaderLease.TryAcquireAsync"/> found: the lease is ours (with its new token), or someone else's.</summary>
internal sealed record LeaseAttempt(bool Acquired, LeaseHolder? Current);

/// <summary>
/// The leader lease of coordinators that share one PostgreSQL database: one row (coordinator_lease, id 1) naming the
/// holder, its advertised address, a fencing token and an expiry in the DATABASE's clock (now()), so the processes'
/// clocks never have to agree. The holder renews it every <see cref="LeaseTiming.RenewInterval"/>; a standby takes it
/// once it has expired, and every takeover increments the token. As the state's <see cref="IWriteFence"/>, it makes
/// every write transaction read the row FOR SHARE first and refuse unless the token is still ours.
/// </summary>
/// <remarks>
/// Why a lease row with a token and not an advisory lock: a session advisory lock is held for as long as the holder's
/// TCP session lives, and a process paused by SIGSTOP (or a long GC, or a VM freeze) keeps its session: the kernel
/// still answers keepalives, so the lock is never freed and the standby never takes over. Were the lock freed instead
/// (the session dropped), the old process would not know, and its other connections could still write: the lock does
/// not guard the writes. Here the guard is inside each write: the FOR SHARE row lock makes a takeover's UPDATE wait for
/// every write transaction that already checked the old token, and every transaction that checks after the takeover
/// committed sees the new token and rolls back. So once a standby holds the lease, nothing a deposed leader does can
/// commit, however long it was paused. A leader paused in the middle of a write transaction would hold the row lock and
/// stall the takeover: each write transaction sets idle_in_transaction_session_timeout to the lease duration, so the
/// server ends such a session and frees the lock.
/// </remarks>
internal sealed class LeaderLease : IWriteFence, IDisposable
{
    /// <summary>The lease table; created when missing (idempotent, safe to run from both coordinators at once).</summary>
    internal const string Schema = """
        CREATE TABLE IF NOT EXISTS coordinator_lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            holder TEXT NOT NULL,
            address TEXT NOT NULL,
            token BIGINT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL
        )
        """;

    private readonly NpgsqlDataSource _dataSource;
    private readonly CancellationTokenSource _lost = new();
    private long _token;
    private string? _lostReason;

    /// <param name="dataSource">The state database's PostgreSQL (the lease uses its own connections from it).</param>
    /// <param name="holder">This process's id, unique per process (<see cref="NewHolderId"/>).</param>
    /// <param name="address">The address clients reach this coordinator at, shown by standbys while it leads.</param>
    public LeaderLease(NpgsqlDataSource dataSource, string holder, string address, LeaseTiming timing)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        ArgumentException.ThrowIfNullOrWhiteSpace(holder);
        ArgumentException.ThrowIfNullOrWhiteSpace(address);
        ArgumentNullException.ThrowIfNull(timing);
        _dataSource = dataSource;
        Holder = holder;
        Address = address;
        Timing = timing;
    }

    public string Holder { get; }

    /// <summary>The address this coordinator is reached at, stored in the lease while it leads.</summary>
    public string Address { get; private set; }

    public LeaseTiming Timing { get; }

    /// <summary>The fencing token while this process holds the lease; 0 before it took it and after it lost it.</summary>
    public long Token => Volatile.Read(ref _token);

    /// <summary>Sets the advertised address once it is known (the bound port, when 0 was asked for); before the first <see cref="TryAcquireAsync"/>.</summary>
    public void Advertise(string address)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(address);
        if (Token != 0 || LostReason is not null)
        {
            throw new InvalidOperationException("the advertised address is set before the lease is taken");
        }
        Address = address;
    }

    /// <summary>Cancelled once this process has lost the lease (a renewal found another holder, or a write was fenced).</summary>
    public CancellationToken Lost => _lost.Token;

    /// <summary>Why the lease was lost; null while it was not.</summary>
    public string? LostReason => Volatile.Read(ref _lostReason);

    /// <summary>Hears each write the fence refuses (one line saying why), for the log.</summary>
    public Action<string>? Refused { get; set; }

    /// <summary>The address of the coordinator that took the lease over, where the loss named one.</summary>
    public string? Successor { get; private set; }

    /// <summary>A holder id unique per process: host, process id and random bytes (a restarted process is a new holder).</summary>
    public static string NewHolderId() => string.Create(CultureInfo.InvariantCulture,
        $"{Environment.MachineName}/{Environment.ProcessId}/{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}");

    /// <summary>Creates the lease table when missing.</summary>
    public static async Task EnsureTableAsync(NpgsqlDataSource dataSource, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        await using NpgsqlConnection connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(Schema, connection);
        try
        {
            await command.ExecuteNonQueryAsync(cancellationToken);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UniqueViolation)
        {
            // Two coordinators creating the table at the same instant: the other one's CREATE won, which is all we need.
        }
    }

    /// <summary>
    /// Takes the lease when it is free (no row yet, or expired in the database's clock), incrementing the token; never
    /// takes it from a holder whose lease runs. The row lock waits at most a renewal interval for write transactions in
    /// flight (a deposed leader's), then the attempt counts as "not acquired" and the caller polls again.
    /// </summary>
    public async Task<LeaseAttempt> TryAcquireAsync(CancellationToken cancellationToken)
    {
        if (LostReason is not null)
        {
            throw new InvalidOperationException("a lease that was lost is not taken again by the same holder; start a new process");
        }
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
        await SetLockTimeoutAsync(connection, transaction, cancellationToken);
        long? token;
        try
        {
            await using var take = new NpgsqlCommand("""
                INSERT INTO coordinator_lease AS l (id, holder, address, token, expires_at)
                VALUES (1, @holder, @address, 1, now() + @duration)
                ON CONFLICT (id) DO UPDATE
                    SET holder = EXCLUDED.holder, address = EXCLUDED.address, token = l.token + 1, expires_at = EXCLUDED.expires_at
                    WHERE l.expires_at < now()
                RETURNING token
                """, connection, transaction);
            take.Parameters.AddWithValue("holder", Holder);
            take.Parameters.AddWithValue("address", Address);
            take.Parameters.AddWithValue("duration", Timing.Duration);
            token = await take.ExecuteScalarAsync(cancellationToken) is long taken ? taken : null;
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.LockNotAvailable)
        {
            // A write of the old holder is in flight (or stalled): it finishes or its session is ended; try again later.
            await transaction.RollbackAsync(cancellationToken);
            return new LeaseAttempt(false, await ReadAsync(cancellationToken));
        }
        await transaction.CommitAsync(cancellationToken);
        if (token is { } ours)
        {
            Volatile.Write(ref _token, ours);
            return new LeaseAttempt(true, new LeaseHolder(Holder, Address, ours, Expired: false));
        }
        return new LeaseAttempt(false, await ReadAsync(cancellationToken));
    }

    /// <summary>
    /// Extends the lease by its duration from the database's now. False when it is no longer ours (another coordinator
    /// took it over): the lease is then lost for good. A database error propagates; the caller decides when too many
    /// failed renewals mean the lease must be treated as lost.
    /// </summary>
    public async Task<bool> RenewAsync(CancellationToken cancellationToken)
    {
        long token = Token;
        if (token == 0)
        {
            return false;
        }
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using NpgsqlTransaction transaction = await connection.BeginTransactionAsync(cancellationToken);
        await SetLockTimeoutAsync(connection, transaction, cancellationToken);
        await using var renew = new NpgsqlCommand(
            "UPDATE coordinator_lease SET expires_at = now() + @duration WHERE id = 1 AND holder = @holder AND token = @token",
            connection, transaction);
        renew.Parameters.AddWithValue("duration", Timing.Duration);
        renew.Parameters.AddWithValue("holder", Holder);
        renew.Parameters.AddWithValue("token", token);
        int renewed = await renew.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        if (renewed == 1)
        {
            return true;
        }
        LeaseHolder? now = await ReadAsync(cancellationToken);
        Successor = now?.Address;
        MarkLost(now is null
            ? "the lease row is gone"
            : $"coordinator {now.Address} took the lease over (token {now.Token.ToString(CultureInfo.InvariantCulture)})");
        return false;
    }

    /// <summary>Gives the lease up at a clean shutdown (after the last write), so a standby takes over at its next poll.</summary>
    public async Task ReleaseAsync(CancellationToken cancellationToken)
    {
        long token = Token;
        if (token == 0)
        {
            return;
        }
        MarkLost("released at shutdown");
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var release = new NpgsqlCommand(
            "UPDATE coordinator_lease SET expires_at = '-infinity' WHERE id = 1 AND holder = @holder AND token = @token", connection);
        release.Parameters.AddWithValue("holder", Holder);
        release.Parameters.AddWithValue("token", token);
        await release.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>The lease row as the database has it now; null when no coordinator ever took the lease.</summary>
    public async Task<LeaseHolder?> ReadAsync(CancellationToken cancellationToken)
    {
        await using NpgsqlConnection connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var read = new NpgsqlCommand("SELECT holder, address, token, expires_at < now() FROM coordinator_lease WHERE id = 1", connection);
        await using NpgsqlDataReader reader = await read.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken)
            ? new LeaseHolder(reader.GetString(0), reader.GetString(1), reader.GetInt64(2), reader.GetBoolean(3))
            : null;
    }

    /// <summary>
    /// The fence: inside the write's transaction, before its work, the lease row is read FOR SHARE and the write is
    /// refused unless this process holds the current token (see the class remarks for why that is enough).
    /// </summary>
    /// <exception cref="LeaseLostException">This process does not (or no longer) hold the lease.</exception>
    public void Check(StateSession transaction)
    {
        ArgumentNullException.ThrowIfNull(transaction);
        long token = Token;
        if (token == 0)
        {
            string refusal = LostReason is { } reason
                ? $"write refused: this coordinator no longer holds the leader lease ({reason})"
                : "write refused: this coordinator is a standby (it does not hold the leader lease)";
            Refused?.Invoke(refusal);
            throw new LeaseLostException(refusal);
        }
        // A SET takes no parameters; the value is an integer this process computed.
        transaction.Execute(string.Create(CultureInfo.InvariantCulture,
            $"SET LOCAL idle_in_transaction_session_timeout = {(long)Timing.Duration.TotalMilliseconds}"));
        List<(string Holder, long Token, string Address)> row = transaction.Query(
            "SELECT holder, token, address FROM coordinator_lease WHERE id = 1 FOR SHARE", r => (r.GetString(0), r.Long(1), r.GetString(2)));
        if (row.Count == 1 && row[0].Holder == Holder && row[0].Token == token)
        {
            return;
        }
        Successor = row.Count == 1 ? row[0].Address : null;
        string why = row.Count == 0
            ? "the lease row is gone"
            : $"the lease is held with token {row[0].Token.ToString(CultureInfo.InvariantCulture)}, ours was {token.ToString(CultureInfo.InvariantCulture)}";
        MarkLost($"a write was fenced: {why}");
        string fenced = $"write refused: this coordinator no longer holds the leader lease ({why})";
        Refused?.Invoke(fenced);
        throw new LeaseLostException(fenced);
    }

    public void Dispose() => _lost.Dispose();

    private void MarkLost(string reason)
    {
        Volatile.Write(ref _token, 0);
        if (Interlocked.CompareExchange(ref _lostReason, reason, null) is null)
        {
            try
            {
                _lost.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // Disposed at shutdown: nobody listens any more.
            }
        }
    }

    private async Task SetLockTimeoutAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(string.Create(CultureInfo.InvariantCulture,
            $"SET LOCAL lock_timeout = {(long)Timing.RenewInterval.TotalMilliseconds}"), connection, transaction);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }
}

/// <summary>The lease's duration and the renewal and standby poll intervals that follow from it.</summary>
internal sealed record LeaseTiming
{
    public const int MinSeconds = 2;
    public const int MaxSeconds = 300;

    /// <summary>The default: a SIGKILLed leader's lease runs out within 8 s and a standby polls every second, so takeover is within 10 s.</summary>
    public const int DefaultSeconds = 8;

    public LeaseTiming(double seconds)
    {
        if (!(seconds is >= MinSeconds and <= MaxSeconds))
        {
            throw new ArgumentOutOfRangeException(nameof(seconds), seconds, $"the lease duration must be in {MinSeconds}..{MaxSeconds} seconds");
        }
        Duration = TimeSpan.FromSeconds(seconds);
        // Four renewals per lease: three may fail (a database restart, a GC pause) before the lease runs out.
        RenewInterval = Duration / 4;
        PollInterval = TimeSpan.FromSeconds(Math.Min(1, seconds / 8));
    }

    /// <summary>How long the lease lasts after each renewal (database clock).</summary>
    public TimeSpan Duration { get; }

    public TimeSpan RenewInterval { get; }

    /// <summary>How often a standby tries to take the lease.</summary>
    public TimeSpan PollInterval { get; }
}
