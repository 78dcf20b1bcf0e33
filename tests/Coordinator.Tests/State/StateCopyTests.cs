using System.Data.Common;
using System.Globalization;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.Cli;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.Coordinator.Storage;
using Federated.Protos.V1;

namespace Federated.Coordinator.Tests.State;

/// <summary>`state copy` moves a whole state from SQLite to PostgreSQL and back, and verifies what it moved.</summary>
[Collection(Cli.ConsoleCollection.Name)]
public sealed class StateCopyTests : IDisposable
{
    private static readonly string[] s_tables =
        ["clients", "runs", "rounds", "participants", "adapters", "budgets", "ledger", "reservations", "client_charges", "audit", "audit_head"];

    private readonly TempDirectory _dir = new();
    private readonly X509Certificate2 _signer = TestSigner.Create();
    private readonly X509Certificate2 _ca;
    private readonly AdapterSigner _adapterSigner;
    private readonly AtRestCipher _cipher;

    public StateCopyTests()
    {
        (_ca, _adapterSigner) = TestAdapterSigner.Create(_dir.File("pki"));
        AtRestCipher.CreateKeyFile(_dir.File("at-rest.key"));
        _cipher = AtRestCipher.FromKeyFile(_dir.File("at-rest.key"));
    }

    public void Dispose()
    {
        _cipher.Dispose();
        _adapterSigner.Dispose();
        _ca.Dispose();
        _signer.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task Copy_SqliteToPostgresAndBack_EveryRowAdapterAndTheSignedChainArriveAndTheCopiesWorkOn()
    {
        using var sqlite = new TestStateDatabase(StateBackend.Sqlite);
        using var postgres = new TestStateDatabase(StateBackend.Postgres);
        using var back = new TestStateDatabase(StateBackend.Sqlite);
        (string initial, string released, byte[] releasedBytes) = BuildState(sqlite);
        Dictionary<string, List<string>> original = Dump(sqlite);

        (int toPg, string toPgOut, string toPgErr) = await Cli.CoordinatorCli.RunCapturedAsync("state", "copy", "--from", sqlite.Argument, "--to", postgres.Argument);
        (int toSqlite, string toSqliteOut, string toSqliteErr) = await Cli.CoordinatorCli.RunCapturedAsync("state", "copy", "--from", postgres.Argument, "--to", back.Argument, "--json");

        Assert.True(toPg == CliRunner.Ok, toPgErr);
        Assert.True(toSqlite == CliRunner.Ok, toSqliteErr);
        // Every table holds the same rows, value for value, on all three (sequences, blobs, ISO times and doubles included).
        Assert.Equal(original, Dump(postgres));
        Assert.Equal(original, Dump(back));
        Assert.Contains("audit chain valid on the copy: ", toPgOut, StringComparison.Ordinal);
        Assert.Contains("ledger default: 2 charges, epsilon_delta sum ", toPgOut, StringComparison.Ordinal);
        Assert.Contains("ledger other: 1 charges", toPgOut, StringComparison.Ordinal);
        Assert.Contains("rows: clients 2, runs 2, rounds 3, participants 6, adapters 4, budgets 2, ledger 3, reservations 1, client_charges 4, audit ", toPgOut, StringComparison.Ordinal);
        Assert.DoesNotContain(new Npgsql.NpgsqlConnectionStringBuilder(postgres.Argument).Password!, toPgOut + toPgErr + toSqliteOut + toSqliteErr, StringComparison.Ordinal);
        using (var json = System.Text.Json.JsonDocument.Parse(toSqliteOut))
        {
            Assert.Equal(4, json.RootElement.GetProperty("adapters").GetProperty("blobs").GetInt32());
        }
        // The adapters' bytes moved into the database (encrypted as they were), and back into files.
        Assert.Equal(4L, postgres.Scalar<long>("SELECT COUNT(*) FROM adapter_blobs WHERE name LIKE '%.adapter.enc'"));
        Assert.Equal(4, Directory.GetFiles(back.Location.AdapterDirectory!, "*.adapter.enc").Length);
        Assert.Equal(0L, back.Scalar<long>("SELECT COUNT(*) FROM adapter_blobs"));

        // Both copies serve, verify and charge on: the chain under the same key, the adapters under the same at-rest key,
        // and the next charge takes the next ledger sequence.
        foreach (TestStateDatabase copy in new[] { postgres, back })
        {
            Assert.Equal(CliRunner.Ok, await Cli.CoordinatorCli.Run("audit", "verify", "--state", copy.Argument));
            using CoordinatorState state = copy.Open(_signer);
            AdapterStore adapters = AdapterStore.For(state, _adapterSigner, _cipher);
            Assert.Equal(releasedBytes, adapters.Read(released));
            Assert.NotNull(adapters.Read(initial));
            adapters.CheckKey();
            state.Rounds.Start("run-b", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, released);
            LedgerRecord next = state.Rounds.Complete(Completion("run-b", 2, adapters.Write(RandomNumberGenerator.GetBytes(64)), "default"));
            Assert.Equal(4, next.Sequence);
        }
    }

    [Fact]
    public async Task Copy_DestinationNotEmpty_RefusedAndNothingWritten()
    {
        using var sqlite = new TestStateDatabase(StateBackend.Sqlite);
        using var postgres = new TestStateDatabase(StateBackend.Postgres);
        BuildState(sqlite);
        using (CoordinatorState state = postgres.Open(_signer))
        {
            state.Clients.Register("zed", "zz", "1.0", "cpu");
        }

        (int code, _, string stderr) = await Cli.CoordinatorCli.RunCapturedAsync("state", "copy", "--from", sqlite.Argument, "--to", postgres.Argument);

        Assert.Equal(CliRunner.Failed, code);
        Assert.Contains("is not empty (table clients has rows)", stderr, StringComparison.Ordinal);
        Assert.Equal(0L, postgres.Scalar<long>("SELECT COUNT(*) FROM ledger"));
        Assert.Equal(1L, postgres.Scalar<long>("SELECT COUNT(*) FROM audit"));
    }

    [Fact]
    public void Verify_CopiedChainTamperedAfterwards_RefusedNamingTheProblem()
    {
        using var sqlite = new TestStateDatabase(StateBackend.Sqlite);
        using var postgres = new TestStateDatabase(StateBackend.Postgres);
        BuildState(sqlite);
        StateCopy.Copy(sqlite.Location, postgres.Location);

        postgres.Execute("UPDATE ledger SET epsilon_delta = epsilon_delta + 1 WHERE sequence = 1");
        var ledger = Assert.Throws<InvalidOperationException>(() => StateCopy.Verify(sqlite.Location, postgres.Location));
        postgres.Execute("UPDATE ledger SET epsilon_delta = epsilon_delta - 1 WHERE sequence = 1");
        postgres.Execute("UPDATE audit SET canonical_json = replace(canonical_json, 'officer', 'OFFICER')");
        var audit = Assert.Throws<InvalidOperationException>(() => StateCopy.Verify(sqlite.Location, postgres.Location));

        Assert.Contains("the ledger totals per population differ", ledger.Message, StringComparison.Ordinal);
        Assert.Contains("does not verify", audit.Message, StringComparison.Ordinal);
    }

    // Two populations, two runs (one with a reservation), three rounds of which two completed and charged, one failed,
    // clients bound to populations, four encrypted adapters.
    private (string Initial, string Released, byte[] ReleasedBytes) BuildState(TestStateDatabase database)
    {
        using CoordinatorState state = database.Open(_signer);
        AdapterStore adapters = AdapterStore.For(state, _adapterSigner, _cipher);
        state.Clients.Register("alice", "aa", "1.0", "cpu");
        state.Clients.Register("bob", "bb", "1.0", "cuda");
        state.Budgets.Set("default", 50, 1e-5, "officer");
        state.Budgets.Set("other", 20, 1e-5, "officer");
        PrivacyPlan plan = PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, 1024, 3, 2, 32, 1.0, 4, 5, 1e-6));
        StoredAdapter initial = adapters.Write(RandomNumberGenerator.GetBytes(256));
        state.Database.Write(work =>
        {
            state.AdapterRecords.Record(work, initial, "run-a", 0, "coordinator");
            state.Runs.Create(work, "run-a", [1, 2, 3], "default", plan.Epsilon.Epsilon, 4, initial.Sha256, "engineer");
            state.Budgets.Reserve(work, "run-a", "default", plan);
        });
        string runB = adapters.Put(RandomNumberGenerator.GetBytes(128), "run-b", 0);
        state.Runs.Create("run-b", [4], "other", 1.5, 2, runB, "engineer");
        state.Rounds.Start("run-a", 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, initial.Sha256);
        byte[] releasedBytes = RandomNumberGenerator.GetBytes(512);
        StoredAdapter released = adapters.Write(releasedBytes);
        state.Rounds.Complete(Completion("run-a", 1, released, "default"));
        state.Rounds.Start("run-a", 2, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2 }, released.Sha256);
        state.Rounds.Fail("run-a", 2, "1 survivor, threshold 2");
        state.Database.Write(work => state.Ledger.Charge(work, Completion("run-a", 3, released, "default").Charge));
        state.Rounds.Start("run-b", 1, new Dictionary<string, int> { ["carol"] = 1, ["dave"] = 2 }, runB);
        state.Rounds.Complete(Completion("run-b", 1, adapters.Write(RandomNumberGenerator.GetBytes(64)), "other", "carol", "dave"));
        state.Runs.End("run-a", RunState.Completed, "2 of 5 rounds released", "coordinator");
        return (initial.Sha256, released.Sha256, releasedBytes);
    }

    private static RoundCompletion Completion(string runId, int round, StoredAdapter adapter, string population, string first = "alice", string second = "bob") =>
        new(new LedgerRecord(0, runId, round, population, 0.5 * round, 0.5, 1e-6, 1, 4, 1.0, 2, default) { Rdp = TestCharges.Rdp() },
            adapter, new Dictionary<string, ParticipantStatus> { [first] = ParticipantStatus.Uploaded, [second] = ParticipantStatus.Uploaded });

    // Each table's rows as text in key order: longs, doubles (round-trip format), hex blobs, strings and NULLs.
    private static Dictionary<string, List<string>> Dump(TestStateDatabase database)
    {
        using DbConnection connection = database.Connect();
        var dump = new Dictionary<string, List<string>>();
        foreach (string table in s_tables)
        {
            using DbCommand command = connection.CreateCommand();
            command.CommandText = $"SELECT * FROM {table} ORDER BY 1, 2";
            using DbDataReader reader = command.ExecuteReader();
            var rows = new List<string>();
            while (reader.Read())
            {
                rows.Add(string.Join("|", Enumerable.Range(0, reader.FieldCount).Select(i => reader.GetName(i) + "=" + reader.GetValue(i) switch
                {
                    DBNull => "NULL",
                    byte[] bytes => Convert.ToHexString(bytes),
                    double d => d.ToString("R", CultureInfo.InvariantCulture),
                    long l => l.ToString(CultureInfo.InvariantCulture),
                    int n => n.ToString(CultureInfo.InvariantCulture),
                    object other => other.ToString(),
                })));
            }
            dump[table] = rows;
        }
        return dump;
    }
}
