using Federated.Aggregation.Privacy;

namespace Federated.Coordinator.State;

/// <summary>
/// Registered edge clients: registration (audited when new or re-keyed), liveness, the list engineers see, and each
/// client's own privacy. A client belongs to one population for life, bound by its first charged round, so its
/// population's budget bounds its epsilon: runs of other populations never select it (<see cref="RecordContributions"/>).
/// </summary>
internal sealed class ClientStore(StateDatabase database)
{
    /// <summary>Records a client's registration; the first registration and a changed certificate are audited.</summary>
    public ClientRecord Register(string clientId, string certificateSha256, string clientVersion, string device)
    {
        ArgumentException.ThrowIfNullOrEmpty(clientId);
        ArgumentException.ThrowIfNullOrEmpty(certificateSha256);
        ArgumentNullException.ThrowIfNull(clientVersion);
        ArgumentNullException.ThrowIfNull(device);
        return database.Write(work =>
        {
            string? previousCertificate = work.Scalar<string>("SELECT certificate_sha256 FROM clients WHERE client_id = @id", ("@id", clientId));
            work.Execute(
                """
                INSERT INTO clients (client_id, certificate_sha256, client_version, device, registered_at, last_seen_at, available)
                VALUES (@id, @cert, @version, @device, @now, @now, 1)
                ON CONFLICT (client_id) DO UPDATE SET certificate_sha256 = @cert, client_version = @version, device = @device, last_seen_at = @now, available = 1
                """,
                ("@id", clientId), ("@cert", certificateSha256), ("@version", clientVersion), ("@device", device), ("@now", StateValues.Format(work.Now)));
            if (previousCertificate != certificateSha256)
            {
                work.Audit(clientId, previousCertificate is null ? "client.register" : "client.certificate_changed",
                    new Dictionary<string, string> { ["client_id"] = clientId, ["certificate_sha256"] = certificateSha256 });
            }
            return Read(work, clientId).Single();
        });
    }

    /// <summary>Updates a registered client's liveness; false when the client never registered.</summary>
    public bool Heartbeat(string clientId, bool available)
    {
        ArgumentException.ThrowIfNullOrEmpty(clientId);
        return database.Write(work => work.Execute("UPDATE clients SET last_seen_at = @now, available = @available WHERE client_id = @id",
            ("@now", StateValues.Format(work.Now)), ("@available", available ? 1 : 0), ("@id", clientId)) == 1);
    }

    /// <summary>Every registered client, or those seen within <paramref name="seenWithin"/>.</summary>
    public IReadOnlyList<ClientRecord> List(TimeSpan? seenWithin = null) =>
        database.Read(session =>
        {
            IReadOnlyList<ClientRecord> all = Read(session, clientId: null);
            return seenWithin is { } window ? [.. all.Where(c => c.LastSeenAt >= session.Now - window)] : all;
        });

    /// <summary>
    /// Records, in the transaction that charges a released round, the clients whose masked inputs were summed into it:
    /// each is bound to the round's population if it had none, and refused if it belongs to another (its epsilon would
    /// then be bounded by neither budget), which rolls the round's completion back.
    /// </summary>
    /// <exception cref="BudgetRefusedException">A contributor belongs to another population.</exception>
    public void RecordContributions(UnitOfWork work, string runId, int round, string population, IReadOnlyList<string> clientIds)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentNullException.ThrowIfNull(clientIds);
        foreach (string clientId in clientIds)
        {
            string? bound = work.Scalar<string>("SELECT population FROM clients WHERE client_id = @id", ("@id", clientId));
            if (bound is not null && bound != population)
            {
                throw new BudgetRefusedException(
                    $"client '{clientId}' belongs to population '{bound}'; round {round} of run '{runId}' of population '{population}' cannot be charged to it, so nothing was released");
            }
            work.Execute("UPDATE clients SET population = @p WHERE client_id = @id AND population IS NULL", ("@p", population), ("@id", clientId));
            work.Execute("INSERT INTO client_charges (client_id, run_id, round) VALUES (@id, @run, @round)", ("@id", clientId), ("@run", runId), ("@round", round));
        }
    }

    /// <summary>
    /// Each charged client's own epsilon: the RDP of every released round it contributed to, composed per order and
    /// converted at its population's budget delta (what its edge ledger composes for the same rounds).
    /// </summary>
    public IReadOnlyDictionary<string, ClientPrivacy> Privacy() =>
        database.Read(session =>
        {
            var rows = session.Query(
                """
                SELECT cc.client_id, l.rdp, b.delta FROM client_charges cc
                JOIN ledger l ON l.run_id = cc.run_id AND l.round = cc.round
                JOIN budgets b ON b.population = l.population
                ORDER BY cc.client_id, l.sequence
                """,
                r => (Client: r.Text(0), Rdp: r.Blob(1), Delta: r.Real(2)));
            var result = new Dictionary<string, ClientPrivacy>(StringComparer.Ordinal);
            foreach (var client in rows.GroupBy(r => r.Client, StringComparer.Ordinal))
            {
                double[]? orders = null, sum = null;
                foreach (var row in client)
                {
                    (double[] o, double[] v) = RdpBlob.Decode(row.Rdp);
                    orders ??= o;
                    sum ??= new double[o.Length];
                    if (!orders.AsSpan().SequenceEqual(o))
                    {
                        throw new InvalidDataException($"client '{client.Key}' was charged RDP vectors over different orders; they cannot be composed");
                    }
                    for (int i = 0; i < sum.Length; i++)
                    {
                        sum[i] += v[i];
                    }
                }
                double delta = client.First().Delta;
                result[client.Key] = new ClientPrivacy(RdpAnalysis.Epsilon(orders!, sum!, delta).Epsilon, delta, client.Count());
            }
            return result;
        });

    private static List<ClientRecord> Read(StateSession session, string? clientId) =>
        session.Query(
            """
            SELECT c.client_id, c.certificate_sha256, c.client_version, c.device, c.registered_at, c.last_seen_at, c.available,
                   (SELECT COUNT(*) FROM participants p WHERE p.client_id = c.client_id AND p.status = @uploaded), c.population
            FROM clients c WHERE (@id = '' OR c.client_id = @id) ORDER BY c.client_id
            """,
            r => new ClientRecord(r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Time(4), r.Time(5), r.Int(6) != 0, r.Int(7), r.OptionalText(8)),
            ("@id", clientId ?? ""), ("@uploaded", ParticipantStatus.Uploaded.ToStored()));
}
