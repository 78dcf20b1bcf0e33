namespace Federated.Coordinator.State;

/// <summary>
/// The coordinator database's schema as an ordered list of migrations, once per backend: <see cref="Migrations"/> for
/// SQLite (PRAGMA user_version counts those applied) and <see cref="PostgresMigrations"/> for PostgreSQL (the one row of
/// state_schema counts them). Entry i of both lists defines the same tables, columns, keys and constraints; only the
/// types are spelled per backend (a test compares the columns both produce).
/// </summary>
internal static class StateSchema
{
    /// <summary>Migration i brings the schema from version i to i + 1. Never edit a shipped entry: append a new one.</summary>
    public static readonly string[] Migrations =
    [
        """
        CREATE TABLE clients (
            client_id          TEXT PRIMARY KEY,
            certificate_sha256 TEXT NOT NULL,
            client_version     TEXT NOT NULL,
            device             TEXT NOT NULL,
            registered_at      TEXT NOT NULL,
            last_seen_at       TEXT NOT NULL,
            available          INTEGER NOT NULL
        );
        CREATE TABLE runs (
            run_id           TEXT PRIMARY KEY,
            plan             BLOB NOT NULL,
            population       TEXT NOT NULL,
            state            INTEGER NOT NULL,
            planned_epsilon  REAL NOT NULL,
            noise_multiplier REAL NOT NULL,
            current_round    INTEGER NOT NULL,
            adapter_sha256   TEXT NOT NULL,
            detail           TEXT NOT NULL,
            created_by       TEXT NOT NULL,
            created_at       TEXT NOT NULL,
            updated_at       TEXT NOT NULL
        );
        CREATE TABLE rounds (
            run_id                TEXT NOT NULL REFERENCES runs(run_id),
            round                 INTEGER NOT NULL,
            stage                 INTEGER NOT NULL,
            selected              INTEGER NOT NULL,
            survivors             INTEGER NOT NULL,
            adapter_sha256_before TEXT NOT NULL,
            adapter_sha256_after  TEXT,
            started_at            TEXT NOT NULL,
            ended_at              TEXT,
            PRIMARY KEY (run_id, round)
        );
        CREATE TABLE participants (
            run_id            TEXT NOT NULL,
            round             INTEGER NOT NULL,
            client_id         TEXT NOT NULL,
            participant_index INTEGER NOT NULL,
            status            TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            PRIMARY KEY (run_id, round, client_id),
            UNIQUE (run_id, round, participant_index),
            FOREIGN KEY (run_id, round) REFERENCES rounds(run_id, round)
        );
        CREATE TABLE adapters (
            sha256     TEXT PRIMARY KEY,
            run_id     TEXT NOT NULL,
            round      INTEGER NOT NULL,
            size_bytes INTEGER NOT NULL,
            signature  BLOB NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE budgets (
            population TEXT PRIMARY KEY,
            epsilon    REAL NOT NULL,
            delta      REAL NOT NULL,
            set_by     TEXT NOT NULL,
            set_at     TEXT NOT NULL
        );
        -- One row per released round; the UNIQUE constraint makes a second charge for a round impossible.
        CREATE TABLE ledger (
            sequence         INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id           TEXT NOT NULL,
            round            INTEGER NOT NULL,
            population       TEXT NOT NULL,
            epsilon_after    REAL NOT NULL,
            epsilon_delta    REAL NOT NULL,
            delta            REAL NOT NULL,
            mechanism        INTEGER NOT NULL,
            noise_multiplier REAL NOT NULL,
            clip_norm        REAL NOT NULL,
            participants     INTEGER NOT NULL,
            charged_at       TEXT NOT NULL,
            UNIQUE (run_id, round)
        );
        CREATE TABLE audit (
            sequence       INTEGER PRIMARY KEY,
            canonical_json TEXT NOT NULL,
            hash           TEXT NOT NULL
        );
        CREATE TABLE audit_head (
            id        INTEGER PRIMARY KEY CHECK (id = 1),
            sequence  INTEGER NOT NULL,
            hash      TEXT NOT NULL,
            signature BLOB NOT NULL,
            -- PEM of the certificate whose key signed the head.
            signer    TEXT NOT NULL
        );
        """,
        // Per-order privacy accounting: each charge keeps its RDP vector, runs reserve their planned RDP, and clients
        // keep the rounds they contributed to (participant rows are pruned; these never are).
        """
        -- The round's RDP as (order, value) pairs of little-endian doubles; NULL only in rows written before this
        -- migration, which were priced as epsilons and cannot be composed (their population takes no more charges).
        ALTER TABLE ledger ADD COLUMN rdp BLOB;
        -- The neighbouring relation the charge is priced for ('replace-one'); NULL in rows written before.
        ALTER TABLE ledger ADD COLUMN adjacency TEXT;
        -- A run's planned RDP (all its rounds), held against its population's budget from the transaction that
        -- records the run until the run ends; what the run spent is its ledger rows.
        CREATE TABLE reservations (
            run_id      TEXT PRIMARY KEY REFERENCES runs(run_id),
            population  TEXT NOT NULL,
            planned_rdp BLOB NOT NULL,
            reserved_at TEXT NOT NULL,
            released_at TEXT
        );
        -- The one population whose runs may select the client, bound by its first charged round.
        ALTER TABLE clients ADD COLUMN population TEXT;
        -- Every released round a client's masked input was summed into.
        CREATE TABLE client_charges (
            client_id TEXT NOT NULL,
            run_id    TEXT NOT NULL,
            round     INTEGER NOT NULL,
            PRIMARY KEY (client_id, run_id, round),
            FOREIGN KEY (run_id, round) REFERENCES ledger(run_id, round)
        );
        """,
        // The adapters' bytes (AES-GCM ciphertext when at-rest encryption is on), by the name the file store gives them
        // (SHA256.adapter or SHA256.adapter.enc). Used where the state is a shared database (PostgreSQL); on SQLite the
        // bytes are files beside the database and this table stays empty.
        """
        CREATE TABLE adapter_blobs (
            name    TEXT PRIMARY KEY,
            content BLOB NOT NULL
        );
        """,
    ];

    /// <summary>
    /// <see cref="Migrations"/> in PostgreSQL's types: INTEGER is BIGINT (ledger.sequence an identity), REAL is DOUBLE
    /// PRECISION, BLOB is BYTEA, and times stay ISO-8601 TEXT, so both backends hold identical values. Text is collated
    /// "C" (byte order, as SQLite compares), so every ORDER BY lists rows in the same order on both. Never edit a shipped
    /// entry: append a new one here and in <see cref="Migrations"/>.
    /// </summary>
    public static readonly string[] PostgresMigrations =
    [
        """
        CREATE TABLE clients (
            client_id          TEXT COLLATE "C" PRIMARY KEY,
            certificate_sha256 TEXT COLLATE "C" NOT NULL,
            client_version     TEXT COLLATE "C" NOT NULL,
            device             TEXT COLLATE "C" NOT NULL,
            registered_at      TEXT COLLATE "C" NOT NULL,
            last_seen_at       TEXT COLLATE "C" NOT NULL,
            available          BIGINT NOT NULL
        );
        CREATE TABLE runs (
            run_id           TEXT COLLATE "C" PRIMARY KEY,
            plan             BYTEA NOT NULL,
            population       TEXT COLLATE "C" NOT NULL,
            state            BIGINT NOT NULL,
            planned_epsilon  DOUBLE PRECISION NOT NULL,
            noise_multiplier DOUBLE PRECISION NOT NULL,
            current_round    BIGINT NOT NULL,
            adapter_sha256   TEXT COLLATE "C" NOT NULL,
            detail           TEXT COLLATE "C" NOT NULL,
            created_by       TEXT COLLATE "C" NOT NULL,
            created_at       TEXT COLLATE "C" NOT NULL,
            updated_at       TEXT COLLATE "C" NOT NULL
        );
        CREATE TABLE rounds (
            run_id                TEXT COLLATE "C" NOT NULL REFERENCES runs(run_id),
            round                 BIGINT NOT NULL,
            stage                 BIGINT NOT NULL,
            selected              BIGINT NOT NULL,
            survivors             BIGINT NOT NULL,
            adapter_sha256_before TEXT COLLATE "C" NOT NULL,
            adapter_sha256_after  TEXT COLLATE "C",
            started_at            TEXT COLLATE "C" NOT NULL,
            ended_at              TEXT COLLATE "C",
            PRIMARY KEY (run_id, round)
        );
        CREATE TABLE participants (
            run_id            TEXT COLLATE "C" NOT NULL,
            round             BIGINT NOT NULL,
            client_id         TEXT COLLATE "C" NOT NULL,
            participant_index BIGINT NOT NULL,
            status            TEXT COLLATE "C" NOT NULL,
            updated_at        TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (run_id, round, client_id),
            UNIQUE (run_id, round, participant_index),
            FOREIGN KEY (run_id, round) REFERENCES rounds(run_id, round)
        );
        CREATE TABLE adapters (
            sha256     TEXT COLLATE "C" PRIMARY KEY,
            run_id     TEXT COLLATE "C" NOT NULL,
            round      BIGINT NOT NULL,
            size_bytes BIGINT NOT NULL,
            signature  BYTEA NOT NULL,
            created_at TEXT COLLATE "C" NOT NULL
        );
        CREATE TABLE budgets (
            population TEXT COLLATE "C" PRIMARY KEY,
            epsilon    DOUBLE PRECISION NOT NULL,
            delta      DOUBLE PRECISION NOT NULL,
            set_by     TEXT COLLATE "C" NOT NULL,
            set_at     TEXT COLLATE "C" NOT NULL
        );
        CREATE TABLE ledger (
            sequence         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            run_id           TEXT COLLATE "C" NOT NULL,
            round            BIGINT NOT NULL,
            population       TEXT COLLATE "C" NOT NULL,
            epsilon_after    DOUBLE PRECISION NOT NULL,
            epsilon_delta    DOUBLE PRECISION NOT NULL,
            delta            DOUBLE PRECISION NOT NULL,
            mechanism        BIGINT NOT NULL,
            noise_multiplier DOUBLE PRECISION NOT NULL,
            clip_norm        DOUBLE PRECISION NOT NULL,
            participants     BIGINT NOT NULL,
            charged_at       TEXT COLLATE "C" NOT NULL,
            UNIQUE (run_id, round)
        );
        CREATE TABLE audit (
            sequence       BIGINT PRIMARY KEY,
            canonical_json TEXT COLLATE "C" NOT NULL,
            hash           TEXT COLLATE "C" NOT NULL
        );
        CREATE TABLE audit_head (
            id        BIGINT PRIMARY KEY CHECK (id = 1),
            sequence  BIGINT NOT NULL,
            hash      TEXT COLLATE "C" NOT NULL,
            signature BYTEA NOT NULL,
            signer    TEXT COLLATE "C" NOT NULL
        );
        """,
        """
        ALTER TABLE ledger ADD COLUMN rdp BYTEA;
        ALTER TABLE ledger ADD COLUMN adjacency TEXT COLLATE "C";
        CREATE TABLE reservations (
            run_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES runs(run_id),
            population  TEXT COLLATE "C" NOT NULL,
            planned_rdp BYTEA NOT NULL,
            reserved_at TEXT COLLATE "C" NOT NULL,
            released_at TEXT COLLATE "C"
        );
        ALTER TABLE clients ADD COLUMN population TEXT COLLATE "C";
        CREATE TABLE client_charges (
            client_id TEXT COLLATE "C" NOT NULL,
            run_id    TEXT COLLATE "C" NOT NULL,
            round     BIGINT NOT NULL,
            PRIMARY KEY (client_id, run_id, round),
            FOREIGN KEY (run_id, round) REFERENCES ledger(run_id, round)
        );
        """,
        """
        CREATE TABLE adapter_blobs (
            name    TEXT COLLATE "C" PRIMARY KEY,
            content BYTEA NOT NULL
        );
        -- Ciphertext does not compress: stored out of line without trying.
        ALTER TABLE adapter_blobs ALTER COLUMN content SET STORAGE EXTERNAL;
        """,
    ];
}
