using System.Data.Common;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.State;

namespace Federated.Coordinator.Tests.State;

/// <summary>The SQLite and PostgreSQL migration lists define the same tables and columns.</summary>
public sealed class StateSchemaTests
{
    [Fact]
    public void Migrations_BothBackends_SameCountTablesColumnsAndNullability()
    {
        using X509Certificate2 signer = TestSigner.Create();
        using var sqlite = new TestStateDatabase(StateBackend.Sqlite);
        using var postgres = new TestStateDatabase(StateBackend.Postgres);
        sqlite.Open(signer).Dispose();
        postgres.Open(signer).Dispose();

        List<string> sqliteColumns = SqliteColumns(sqlite);
        List<string> postgresColumns = Rows(postgres,
            """
            SELECT c.table_name || '.' || c.column_name || ' ' ||
                   CASE c.data_type WHEN 'bigint' THEN 'INTEGER' WHEN 'text' THEN 'TEXT' WHEN 'double precision' THEN 'REAL' WHEN 'bytea' THEN 'BLOB' ELSE c.data_type END ||
                   CASE WHEN c.is_nullable = 'NO' THEN ' NOT NULL' ELSE '' END
            FROM information_schema.columns c
            WHERE c.table_schema = current_schema() AND c.table_name <> 'state_schema'
            ORDER BY c.table_name, c.ordinal_position
            """);

        Assert.Equal(StateSchema.Migrations.Length, StateSchema.PostgresMigrations.Length);
        Assert.True(sqliteColumns.Count > 50, $"only {sqliteColumns.Count} columns");
        Assert.Equal(sqliteColumns, postgresColumns);
        // Keys and uniqueness: the same primary keys and UNIQUE constraints (what makes a second charge impossible).
        Assert.Equal(
            ["adapter_blobs", "adapters", "audit", "audit_head", "budgets", "client_charges", "clients", "ledger", "participants", "reservations", "rounds", "runs"],
            Rows(postgres, "SELECT DISTINCT table_name FROM information_schema.table_constraints WHERE table_schema = current_schema() AND constraint_type = 'PRIMARY KEY' AND table_name <> 'state_schema' ORDER BY 1"));
        Assert.Equal(["ledger", "participants"],
            Rows(postgres, "SELECT table_name FROM information_schema.table_constraints WHERE table_schema = current_schema() AND constraint_type = 'UNIQUE' ORDER BY 1"));
    }

    private static List<string> SqliteColumns(TestStateDatabase sqlite)
    {
        var columns = new List<string>();
        foreach (string table in Rows(sqlite, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"))
        {
            using DbConnection connection = sqlite.Connect();
            using DbCommand command = connection.CreateCommand();
            // An INTEGER PRIMARY KEY is NOT NULL whatever PRAGMA table_info says (it is the rowid).
            command.CommandText = $"SELECT name, type, \"notnull\" OR (pk > 0) FROM pragma_table_info('{table}') ORDER BY cid";
            using DbDataReader reader = command.ExecuteReader();
            while (reader.Read())
            {
                columns.Add($"{table}.{reader.GetString(0)} {reader.GetString(1)}{(reader.GetInt64(2) != 0 ? " NOT NULL" : "")}");
            }
        }
        return columns;
    }

    private static List<string> Rows(TestStateDatabase database, string sql)
    {
        using DbConnection connection = database.Connect();
        using DbCommand command = connection.CreateCommand();
        command.CommandText = sql;
        using DbDataReader reader = command.ExecuteReader();
        var rows = new List<string>();
        while (reader.Read())
        {
            rows.Add(reader.GetString(0));
        }
        return rows;
    }
}
