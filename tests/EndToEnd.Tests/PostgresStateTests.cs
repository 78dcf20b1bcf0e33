using Federated.Cli;
using Federated.Coordinator;
using Federated.Coordinator.Cli;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Training.Model;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// A coordinator on a real PostgreSQL database: a run's rounds, adapters and audit chain live in the database (none in
/// files), and a database lost in the middle of a round stops the coordinator, which charged nothing for that round.
/// </summary>
public sealed class PostgresStateTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Serve_DatabaseLostMidRound_RoundUnchargedAndCoordinatorStopsNamingTheServer()
    {
        string connectionString = PostgresServer.Shared.CreateDatabase();
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        string database = builder.Database!;
        string password = builder.Password!;
        var logs = new CapturedLogs();
        var options = new CoordinatorOptions
        {
            Pki = coordinator.Pki, Port = 0, Address = "127.0.0.1", State = connectionString, HeartbeatIntervalSeconds = 1,
        };
        string model = Path.Combine(coordinator.Root, "base-pg");
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(), seed: 5);
        var atRound2Upload = new CountdownEvent(2);
        var lost = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        Task[] clients = [];
        string runId;
        try
        {
            await using (CoordinatorHost host = CoordinatorHost.Create(options, logging => logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug)))
            {
                await host.StartAsync(CancellationToken.None);
                host.State.Budgets.Set("default", 50, 1e-5, "officer");
                clients = [.. new[] { "alice", "bob" }.Select(name => Task.Run(() => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, host.Address)
                {
                    BeforeStage = async (manifest, stage, ct) =>
                    {
                        if (manifest.Round.Round == 2 && stage == RoundStage.MaskedInput && !lost.Task.IsCompleted)
                        {
                            atRound2Upload.Signal();
                            await lost.Task.WaitAsync(ct);
                        }
                    },
                }.RunAsync(stop.Token)))];
                var plan = new RunPlan
                {
                    BaseModel = model, LoraRank = 2, Rounds = 2, ClientsPerRound = 2, LocalSteps = 1, LearningRate = 0.01,
                    ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
                };
                plan.TargetModules.Add("q_proj");
                runId = host.Services.GetRequiredService<Coordinator.Rounds.RunOrchestrator>().Start(plan, "engineer").RunId;
                Assert.True(atRound2Upload.Wait(TimeSpan.FromMinutes(3), stop.Token), "the clients never reached the upload of round 2");

                // What round 1 left in the database: its charge, and its adapter's bytes as a row (no file anywhere).
                Assert.Equal(1L, Scalar<long>(connectionString, "SELECT COUNT(*) FROM ledger"));
                Assert.True(Scalar<long>(connectionString, "SELECT COUNT(*) FROM adapter_blobs") >= 2);

                // The database goes away: no new connection is allowed and every open one is closed by the server.
                Admin($"ALTER DATABASE {database} ALLOW_CONNECTIONS false");
                Admin($"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'");
                lost.SetResult();

                Task shutdown = host.WaitForShutdownAsync(CancellationToken.None);
                Assert.Same(shutdown, await Task.WhenAny(shutdown, Task.Delay(TimeSpan.FromMinutes(1), stop.Token)));
                string reason = host.StateLostReason ?? "";
                Assert.Contains($"lost the PostgreSQL state database at {builder.Host}:{builder.Port}", reason, StringComparison.Ordinal);
                Assert.DoesNotContain(password, reason, StringComparison.Ordinal);
                Assert.Contains(logs.Lines, l => l.EventId == 1008 && l.Message.Contains(reason, StringComparison.Ordinal));
                Assert.Contains(logs.Lines, l => l.EventId == 1000 && l.Message.Contains($"state postgresql://", StringComparison.Ordinal));
                Assert.DoesNotContain(logs.Lines, l => l.Message.Contains(password, StringComparison.Ordinal));
                // Nothing is answered from memory once the state is gone.
                Assert.Throws<StateUnavailableException>(() => host.State.Runs.Get(runId));
            }
        }
        finally
        {
            lost.TrySetResult();
            await stop.CancelAsync();
            await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
            Admin($"ALTER DATABASE {database} ALLOW_CONNECTIONS true");
        }

        // Round 2 was in progress: it charged nothing and is not completed; round 1's charge and the chain are intact.
        Assert.Equal(1L, Scalar<long>(connectionString, $"SELECT COUNT(*) FROM ledger WHERE run_id = '{runId}' AND round = 1"));
        Assert.Equal(0L, Scalar<long>(connectionString, $"SELECT COUNT(*) FROM ledger WHERE run_id = '{runId}' AND round = 2"));
        Assert.NotEqual((long)RoundStage.Completed, Scalar<long>(connectionString, $"SELECT stage FROM rounds WHERE run_id = '{runId}' AND round = 2"));
        Assert.Equal(0, await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["audit", "verify", "--state", connectionString, "--pki", coordinator.Pki]));
        PostgresServer.Shared.DropDatabase(connectionString);
    }

    private static T Scalar<T>(string connectionString, string sql)
    {
        using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        connection.Open();
        using var command = new NpgsqlCommand(sql, connection);
        return (T)Convert.ChangeType(command.ExecuteScalar()!, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static void Admin(string sql)
    {
        using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(PostgresServer.Shared.AdminConnectionString) { Pooling = false }.ConnectionString);
        connection.Open();
        using var command = new NpgsqlCommand(sql, connection);
        command.ExecuteNonQuery();
    }
}
