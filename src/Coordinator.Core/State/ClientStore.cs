namespace Federated.Coordinator.State;

/// <summary>Registered edge clients: registration (audited when new or re-keyed), liveness, and the list engineers see.</summary>
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

    private static List<ClientRecord> Read(StateSession session, string? clientId) =>
        session.Query(
            """
            SELECT c.client_id, c.certificate_sha256, c.client_version, c.device, c.registered_at, c.last_seen_at, c.available,
                   (SELECT COUNT(*) FROM participants p WHERE p.client_id = c.client_id AND p.status = @uploaded)
            FROM clients c WHERE (@id = '' OR c.client_id = @id) ORDER BY c.client_id
            """,
            r => new ClientRecord(r.Text(0), r.Text(1), r.Text(2), r.Text(3), r.Time(4), r.Time(5), r.Int(6) != 0, r.Int(7)),
            ("@id", clientId ?? ""), ("@uploaded", ParticipantStatus.Uploaded.ToStored()));
}
