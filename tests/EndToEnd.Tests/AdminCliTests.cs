using System.Security.Cryptography.X509Certificates;
using System.Security.Cryptography;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Cli;
using Federated.Coordinator.Cli;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Provenance;
using Federated.Trust;
using Federated.Wire;
using Spectre.Console.Cli;

namespace Federated.EndToEnd.Tests;

/// <summary>The admin CLI swaps Console.Out/Error and reads FEDERATED_* variables, so its tests run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AdminCliCollection
{
    public const string Name = "Admin CLI";
}

/// <summary>
/// Each admin command run in process through the coordinator's command tree (CliRunner: the real exit codes) against
/// a real coordinator over mutual TLS, checking JSON keys, exit codes and role refusals.
/// </summary>
[Collection(AdminCliCollection.Name)]
public sealed class AdminCliTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    private static Task<(int Code, string Out, string Err)> RunAsync(params string[] args) =>
        ConsoleCapture.RunAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args));

    /// <summary>Runs a command as <paramref name="identity"/> with the connection flags appended.</summary>
    private Task<(int Code, string Out, string Err)> AsAsync(string identity, params string[] args) =>
        RunAsync([.. args, "--coordinator", coordinator.Address.ToString(), "--identity", coordinator.Identity(identity), "--ca", coordinator.CaPath]);

    private static JsonElement Json(string output)
    {
        using JsonDocument document = JsonDocument.Parse(output);
        return document.RootElement.Clone();
    }

    private static string ClosedAddress()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return $"https://127.0.0.1:{port}";
    }

    [Fact]
    public async Task AdminCommand_FirstCoordinatorDead_AnsweredByTheSecond()
    {
        coordinator.Host.State.Budgets.Set("list-pop", 4.0, 1e-6, "officer");
        string coordinators = $"{ClosedAddress()},https://127.0.0.1:{coordinator.Address.Port}";

        var (code, output, error) = await RunAsync("budget", "show", "--population", "list-pop", "--json",
            "--coordinator", coordinators, "--identity", coordinator.Identity("officer"), "--ca", coordinator.CaPath);

        Assert.True(code == 0, error);
        Assert.Equal(4.0, Json(output).GetProperty("epsilon").GetDouble());

        // A stream (run status --watch) finds the leader first too: the live coordinator's own answer for an unknown run
        // comes back, not the dead address's connection failure.
        (code, _, error) = await RunAsync("run", "status", "no-such-run", "--watch",
            "--coordinator", coordinators, "--identity", coordinator.Identity("engineer"), "--ca", coordinator.CaPath);

        Assert.Equal(1, code);
        Assert.Contains("NotFound: run 'no-such-run' is not known to this coordinator", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AdminCommand_NoCoordinatorAnswers_OneLineNamingEveryAddressAndWhy()
    {
        string first = ClosedAddress(), second = ClosedAddress();

        var (code, output, error) = await RunAsync("budget", "show", "--population", "list-pop",
            "--coordinator", $"{first},{second}", "--identity", coordinator.Identity("officer"), "--ca", coordinator.CaPath);

        Assert.Equal(1, code);
        Assert.Equal("", output);
        string line = Assert.Single(error.Trim().Split('\n'));
        Assert.Contains("no coordinator answered as leader", line, StringComparison.Ordinal);
        Assert.Contains($"{first} (", line, StringComparison.Ordinal);
        Assert.Contains($"{second} (", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AdminCommand_BadEntryInCoordinatorList_Exit2NamingIt()
    {
        var (code, _, error) = await RunAsync("budget", "show", "--coordinator", $"https://127.0.0.1:{coordinator.Address.Port},http://standby:7443",
            "--identity", coordinator.Identity("officer"), "--ca", coordinator.CaPath);

        Assert.Equal(2, code);
        Assert.Contains("--coordinator entry 2 of 2 'http://standby:7443' is not an https:// address", error, StringComparison.Ordinal);
        Assert.Single(error.Trim().Split('\n'));
    }

    private string BaseModel(string name, int seed)
    {
        string path = Path.Combine(coordinator.Root, name);
        if (!Directory.Exists(path))
        {
            TinyLlamaFactory.Write(path, TinyLlamaFactory.DefaultConfig(), seed: seed);
        }
        return path;
    }

    [Fact]
    public async Task BudgetSetAndShow_Officer_JsonKeysAndTable()
    {
        var (code, output, error) = await AsAsync("officer", "budget", "set", "--epsilon", "7.5", "--delta", "1e-5", "--population", "cli-pop", "--json");

        Assert.Equal(0, code);
        Assert.Equal("", error);
        JsonElement set = Json(output);
        Assert.Equal("cli-pop", set.GetProperty("population").GetString());
        Assert.Equal(7.5, set.GetProperty("epsilon").GetDouble());
        Assert.Equal(1e-5, set.GetProperty("delta").GetDouble());
        Assert.Equal(0.0, set.GetProperty("epsilon_spent").GetDouble());
        Assert.Equal(0.0, set.GetProperty("epsilon_reserved").GetDouble());
        Assert.Equal(7.5, set.GetProperty("epsilon_remaining").GetDouble());
        Assert.Equal(("client", "replace-one"), (set.GetProperty("privacy_unit").GetString(), set.GetProperty("adjacency").GetString()));
        Assert.Equal("officer", set.GetProperty("set_by").GetString());
        Assert.True(set.GetProperty("set_at").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(-5));

        (code, output, _) = await AsAsync("officer", "budget", "show", "--population", "cli-pop", "--json");
        Assert.Equal(0, code);
        Assert.Equal(7.5, Json(output).GetProperty("epsilon").GetDouble());

        (code, output, _) = await AsAsync("officer", "budget", "show", "--population", "cli-pop");
        Assert.Equal(0, code);
        Assert.Contains("epsilon remaining", output, StringComparison.Ordinal);
        Assert.Contains("epsilon reserved", output, StringComparison.Ordinal);
        Assert.Contains("7.5 at delta 1E-05, client-level, replace-one", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BudgetShow_UnsetPopulation_Exit1WithServerDetail()
    {
        var (code, output, error) = await AsAsync("officer", "budget", "show", "--population", "never-set", "--json");

        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Equal("coordinator: error: NotFound: no budget is set for population 'never-set'; an officer sets one with 'budget set'", error.Trim());
    }

    [Fact]
    public async Task BudgetSet_Engineer_PermissionDeniedAndBudgetUnchanged()
    {
        coordinator.Host.State.Budgets.Set("guarded", 1.0, 1e-5, "officer");

        var (code, output, error) = await AsAsync("engineer", "budget", "set", "--epsilon", "100", "--delta", "1e-5", "--population", "guarded");

        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Contains("PermissionDenied: role 'engineer' may not call /federated.v1.AdminService/SetBudget; allowed roles: officer", error, StringComparison.Ordinal);
        Assert.Single(error.Trim().Split('\n'));
        Assert.Equal(1.0, coordinator.Host.State.Budgets.Get("guarded")!.Epsilon);
    }

    [Fact]
    public async Task RunStart_Officer_PermissionDenied()
    {
        var (code, _, error) = await AsAsync("officer", "run", "start", "--base-model", BaseModel("base-denied", 4), "--rounds", "1",
            "--clients-per-round", "3", "--noise-multiplier", "1", "--delta", "1e-6");

        Assert.Equal(1, code);
        Assert.Contains("PermissionDenied: role 'officer' may not call /federated.v1.AdminService/StartRun; allowed roles: engineer", error, StringComparison.Ordinal);
    }

    public static TheoryData<string[]> EveryAdminCommand => new()
    {
        new[] { "run", "start", "--base-model", "/nonexistent", "--rounds", "1", "--clients-per-round", "3", "--noise", "1", "--delta", "1e-6" },
        new[] { "run", "status", "run-0000000000000000" },
        new[] { "run", "status", "run-0000000000000000", "--watch" },
        new[] { "run", "abort", "run-0000000000000000" },
        new[] { "run", "export", "run-0000000000000000", "--out", "@OUT" },
        new[] { "clients", "list" },
        new[] { "budget", "set", "--epsilon", "1", "--delta", "1e-5" },
        new[] { "budget", "show" },
        new[] { "ledger", "show" },
        new[] { "audit", "show" },
        new[] { "run", "report", "--run", "run-1", "--out", "@OUT" },
    };

    [Theory]
    [MemberData(nameof(EveryAdminCommand))]
    public async Task AnyAdminCommand_ClientCertificate_PermissionDenied(string[] args)
    {
        string[] resolved = [.. args.Select(a => a == "@OUT" ? Path.Combine(coordinator.Root, "client-export-" + Guid.NewGuid().ToString("N")) : a)];

        var (code, output, error) = await AsAsync("alice", resolved);

        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Contains("PermissionDenied: a client certificate cannot call the admin service", error, StringComparison.Ordinal);
        if (args[1] is "export" or "report")
        {
            Assert.False(Directory.Exists(resolved[^1]));
        }
    }

    public static TheoryData<string[], string> BadUsage => new()
    {
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1" }, "give exactly one of --clients-per-round" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--target-epsilon", "2", "--clients-per-round", "3" }, "give exactly one of --noise-multiplier" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "0", "--delta", "1e-6", "--noise", "1", "--clients-per-round", "3" }, "--rounds must be an integer in 1..10000" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--sampling-rate", "1.5" }, "--sampling-rate must be in (0, 1]" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1", "--noise", "1", "--clients-per-round", "3" }, "--delta must be in (0, 1)" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--clients-per-round", "3", "--targets", "q_proj,lm_head" }, "--targets: 'lm_head' is not one of" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--clients-per-round", "3", "--mechanism", "local" }, "--mechanism must be distributed or central" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--clients-per-round", "3", "--rank", "300" }, "--rank must be an integer in 1..256" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--clients-per-round", "3", "--stage-timeout", "5" }, "--stage-timeout must be an integer in 10..86400" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--noise", "1", "--clients-per-round", "3", "--min-survivors", "4" }, "--min-survivors must be in 2..3" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "patient" }, "--privacy-unit must be client, record or both, got 'patient'" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "both", "--record-clip", "1" }, "--privacy-unit both needs --record-noise Z (> 0) and --record-clip C (> 0)" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "both", "--record-noise", "0", "--record-clip", "1" }, "--record-noise must be > 0, got 0" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "both", "--record-noise", "NaN", "--record-clip", "1" }, "--record-noise must be a number > 0, got 'NaN'" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "both", "--record-noise", "1", "--record-clip", "Infinity" }, "--record-clip must be a number > 0, got 'Infinity'" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "both", "--record-noise", "1", "--record-clip", "1", "--batch-size", "0" }, "--batch-size must be an integer in 1..100000" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--record-noise", "1" }, "--record-noise applies only with --privacy-unit record or both" },
        { new[] { "run", "start", "--base-model", "m", "--rounds", "1", "--delta", "1e-6", "--clients-per-round", "3", "--noise", "1", "--privacy-unit", "record", "--record-noise", "1", "--record-clip", "1" }, "--privacy-unit record has no client-level noise" },
        { new[] { "run", "status", "../../etc/passwd" }, "RUN_ID must be 1-64 characters" },
        { new[] { "run", "abort", "run-1", "--reason", new string('x', 300) }, "--reason must be at most 256 characters" },
        { new[] { "budget", "set", "--epsilon", "-1", "--delta", "1e-5" }, "--epsilon must be > 0" },
        { new[] { "budget", "set", "--epsilon", "1" }, "--delta is required" },
        { new[] { "budget", "show", "--population", "no spaces" }, "--population must be 1-64 characters" },
        { new[] { "audit", "show", "--limit", "20000" }, "--limit must be an integer in 1..10000" },
        { new[] { "run", "export", "run-1" }, "--out DIR is required" },
        { new[] { "run", "report", "--run", "run-1" }, "--out DIR is required" },
        { new[] { "run", "report", "--out", "report" }, "--run RUN_ID is required" },
        { new[] { "run", "report", "--run", "../x", "--out", "report" }, "RUN_ID must be 1-64 characters" },
    };

    [Theory]
    [MemberData(nameof(BadUsage))]
    public async Task AdminCommand_BadFlag_Exit2NamingTheFlagBeforeConnecting(string[] args, string message)
    {
        // An unreachable coordinator: a usage error must be found before any connection is tried.
        var (code, output, error) = await RunAsync([.. args, "--coordinator", "https://127.0.0.1:1", "--identity", coordinator.Identity("engineer"), "--ca", coordinator.CaPath]);

        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(message, error, StringComparison.Ordinal);
        Assert.Single(error.Trim().Split('\n'));
    }

    [Fact]
    public async Task AdminCommand_ConnectionFromEnvironment_UsedWhenFlagsAbsent()
    {
        coordinator.Host.State.Budgets.Set("env-pop", 3.0, 1e-6, "officer");
        string?[] saved = [.. new[] { AdminSettings.CoordinatorVariable, AdminSettings.IdentityVariable, AdminSettings.CaVariable }.Select(Environment.GetEnvironmentVariable)];
        try
        {
            Environment.SetEnvironmentVariable(AdminSettings.CoordinatorVariable, null);
            Environment.SetEnvironmentVariable(AdminSettings.IdentityVariable, null);
            Environment.SetEnvironmentVariable(AdminSettings.CaVariable, null);
            var (code, _, error) = await RunAsync("budget", "show", "--population", "env-pop", "--json");
            Assert.Equal(2, code);
            Assert.Contains("--coordinator is required: pass --coordinator URL or set FEDERATED_COORDINATOR", error, StringComparison.Ordinal);

            Environment.SetEnvironmentVariable(AdminSettings.CoordinatorVariable, coordinator.Address.ToString());
            Environment.SetEnvironmentVariable(AdminSettings.IdentityVariable, coordinator.Identity("officer"));
            Environment.SetEnvironmentVariable(AdminSettings.CaVariable, coordinator.CaPath);
            string output;
            (code, output, _) = await RunAsync("budget", "show", "--population", "env-pop", "--json");
            Assert.Equal(0, code);
            Assert.Equal(3.0, Json(output).GetProperty("epsilon").GetDouble());

            // A flag wins over its variable.
            (code, _, error) = await RunAsync("budget", "show", "--population", "env-pop", "--identity", coordinator.Identity("engineer"));
            Assert.Equal(1, code);
            Assert.Contains("PermissionDenied", error, StringComparison.Ordinal);
        }
        finally
        {
            Environment.SetEnvironmentVariable(AdminSettings.CoordinatorVariable, saved[0]);
            Environment.SetEnvironmentVariable(AdminSettings.IdentityVariable, saved[1]);
            Environment.SetEnvironmentVariable(AdminSettings.CaVariable, saved[2]);
        }
    }

    [Fact]
    public async Task AdminCommand_IdentityFromAnotherFederation_Exit2BeforeConnecting()
    {
        var (code, _, error) = await RunAsync("budget", "show", "--coordinator", coordinator.Address.ToString(),
            "--identity", Path.Combine(coordinator.RoguePki, "mallory.pfx"), "--ca", coordinator.CaPath);

        Assert.Equal(2, code);
        Assert.Contains("is not an identity of the federation in --ca", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AdminCommand_CoordinatorFromAnotherFederation_Exit1NamingTheRefusal()
    {
        // Trusting the rogue CA only: the real coordinator's certificate must be refused by the CLI.
        using (var rogue = Federated.Coordinator.Pki.FederationPki.Load(coordinator.RoguePki, TimeProvider.System))
        {
            if (!File.Exists(Path.Combine(coordinator.RoguePki, "rogue-officer.pfx")))
            {
                rogue.IssueIdentity(coordinator.RoguePki, "rogue-officer", FederationRole.Officer, password: null);
            }
        }
        var (code, _, error) = await RunAsync("budget", "show", "--coordinator", coordinator.Address.ToString(),
            "--identity", Path.Combine(coordinator.RoguePki, "rogue-officer.pfx"), "--ca", Path.Combine(coordinator.RoguePki, "ca.crt"));

        Assert.Equal(1, code);
        Assert.Contains("Unavailable: cannot reach the coordinator", error, StringComparison.Ordinal);
        Assert.Contains("not from this federation", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAbort_PendingRun_AbortedAndWatchExits1()
    {
        coordinator.Host.State.Budgets.Set("abortable", 1000, 1e-5, "officer");
        // 1000 clients per round are never online here, so the run stays pending until aborted.
        var (code, output, error) = await AsAsync("engineer", "run", "start", "--base-model", BaseModel("base-abort", 5), "--rank", "2",
            "--targets", "q_proj", "--rounds", "1", "--clients-per-round", "1000", "--noise", "1", "--delta", "1e-6", "--population", "abortable", "--json");
        Assert.True(code == 0, error);
        JsonElement started = Json(output);
        string runId = started.GetProperty("run_id").GetString()!;
        double reserved = started.GetProperty("epsilon_reserved").GetDouble();
        // Started, and told at once that it will wait: nobody of the population is online, a round needs 1000.
        Assert.Equal((0u, 1000u), (started.GetProperty("clients_online").GetUInt32(), started.GetProperty("clients_needed").GetUInt32()));
        Assert.Contains("warning: 0 client(s) of population 'abortable' are online and free, and a round needs 1000", error, StringComparison.Ordinal);

        (code, output, _) = await AsAsync("engineer", "run", "status", runId, "--json");
        Assert.Equal(0, code);
        Assert.Equal("pending", Json(output).GetProperty("state").GetString());
        // The status names what the pending run waits for (once its loop has looked at the pool).
        string detail = Json(output).GetProperty("detail").GetString()!;
        for (int i = 0; i < 100 && detail.Length == 0; i++)
        {
            await Task.Delay(100);
            (_, output, _) = await AsAsync("engineer", "run", "status", runId, "--json");
            detail = Json(output).GetProperty("detail").GetString()!;
        }
        Assert.Equal("waiting for clients: 0 of population 'abortable' online and free, round 1 needs 1000", detail);
        // The run's whole plan is reserved from the moment it is accepted.
        (code, output, _) = await AsAsync("officer", "budget", "show", "--population", "abortable", "--json");
        Assert.Equal(0, code);
        JsonElement held = Json(output);
        Assert.True(reserved > 0);
        Assert.Equal((0.0, reserved, 1000 - reserved), (held.GetProperty("epsilon_spent").GetDouble(), held.GetProperty("epsilon_reserved").GetDouble(),
            held.GetProperty("epsilon_remaining").GetDouble()));

        (code, output, error) = await AsAsync("engineer", "run", "abort", runId, "--reason", "cli test", "--json");
        Assert.True(code == 0, error);
        JsonElement aborted = Json(output);
        Assert.Equal("aborted", aborted.GetProperty("state").GetString());
        Assert.Contains("cli test", aborted.GetProperty("detail").GetString(), StringComparison.Ordinal);

        (code, output, error) = await AsAsync("officer", "run", "status", runId, "--watch", "--json");
        Assert.Equal(1, code);
        Assert.Equal("aborted", Json(output.Trim().Split('\n')[^1]).GetProperty("state").GetString());
        Assert.Contains($"run {runId} aborted", error, StringComparison.Ordinal);

        (code, output, _) = await AsAsync("engineer", "run", "status", runId);
        Assert.Equal(0, code);
        Assert.Contains("aborted by engineer: cli test", output, StringComparison.Ordinal);

        // Aborted before any round was released: what it reserved is free again.
        (code, output, _) = await AsAsync("officer", "budget", "show", "--population", "abortable", "--json");
        Assert.Equal(0, code);
        JsonElement released = Json(output);
        Assert.Equal((0.0, 0.0, 1000.0), (released.GetProperty("epsilon_spent").GetDouble(), released.GetProperty("epsilon_reserved").GetDouble(),
            released.GetProperty("epsilon_remaining").GetDouble()));
    }

    [Fact]
    public async Task RunStatusWatch_Cancelled_SurfacesAsCancellationForExit130()
    {
        coordinator.Host.State.Budgets.Set("cancel", 1000, 1e-5, "officer");
        var (code, output, error) = await AsAsync("engineer", "run", "start", "--base-model", BaseModel("base-cancel", 7), "--rank", "2",
            "--targets", "q_proj", "--rounds", "1", "--clients-per-round", "1000", "--noise", "1", "--delta", "1e-6", "--population", "cancel", "--json");
        Assert.True(code == 0, error);
        string runId = Json(output).GetProperty("run_id").GetString()!;
        try
        {
            // CliRunner turns an OperationCanceledException after Ctrl+C into exit 130; the command must not turn the
            // cancelled stream into an ordinary failure (exit 1) instead.
            var app = new CommandApp();
            app.Configure(config =>
            {
                config.PropagateExceptions();
                CoordinatorCommands.Configure(config);
            });
            using var interrupt = new CancellationTokenSource(TimeSpan.FromSeconds(2));
            (_, string watched, _) = await ConsoleCapture.RunAsync(async () =>
            {
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => app.RunAsync(
                    ["run", "status", runId, "--watch", "--coordinator", coordinator.Address.ToString(), "--identity", coordinator.Identity("engineer"), "--ca", coordinator.CaPath],
                    interrupt.Token));
                return 0;
            });
            Assert.Contains("pending", watched, StringComparison.Ordinal);
        }
        finally
        {
            await AsAsync("engineer", "run", "abort", runId);
        }
    }

    [Fact]
    public async Task RunStatus_UnknownRun_Exit1NotFound()
    {
        var (code, _, error) = await AsAsync("engineer", "run", "status", "run-0123456789abcdef", "--json");

        Assert.Equal(1, code);
        Assert.Equal("coordinator: error: NotFound: run 'run-0123456789abcdef' is not known to this coordinator", error.Trim());
    }

    [Fact]
    public async Task RecordedRun_NotHeldByThisProcess_StatusWatchAndExportFromState()
    {
        // A run in the state store that this coordinator process never ran: what a restart leaves behind.
        string baseModel = BaseModel("base-recorded", 8);
        coordinator.Host.State.Budgets.Set("recorded", 20, 1e-5, "officer");
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = 2, ClientsPerRound = 2, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1, Delta = 1e-6, Population = "recorded",
        };
        plan.TargetModules.Add("q_proj");
        GlobalAdapter adapter = GlobalAdapter.Create(baseModel, new LoraSettings(Rank: 2, Alpha: 4, TargetModules: ["q_proj"], InitSeed: 3, FreezeA: true));
        const string done = "run-00000000000000d1", orphan = "run-00000000000000d2";
        string initial = coordinator.Host.Adapters.Put(adapter.Serialize(), done, 0);
        coordinator.Host.State.Runs.Create(done, Google.Protobuf.MessageExtensions.ToByteArray(plan), "recorded", 1.5, 1, initial, "engineer");
        coordinator.Host.State.Rounds.Start(done, 1, new Dictionary<string, int> { ["former-1"] = 1, ["former-2"] = 2 }, initial);
        adapter.ApplyMeanUpdate(Enumerable.Repeat(0.125f, adapter.BDimension).ToArray());
        Coordinator.State.StoredAdapter released = coordinator.Host.Adapters.Write(adapter.Serialize());
        coordinator.Host.State.Rounds.Complete(new Coordinator.State.RoundCompletion(
            new Coordinator.State.LedgerRecord(0, done, 1, "recorded", 0.9, 0.9, 1e-6, 1, 1, 1, 2, DateTimeOffset.UtcNow)
            {
                Rdp = new Coordinator.State.RdpCharge(RdpOrders.Default, [.. RdpOrders.Default.Select(a => 0.01 * a)]),
            },
            released,
            // Participants that are not this fixture's clients: a charged round binds its contributors to its population.
            new Dictionary<string, Coordinator.State.ParticipantStatus> { ["former-1"] = Coordinator.State.ParticipantStatus.Uploaded, ["former-2"] = Coordinator.State.ParticipantStatus.Uploaded }));
        coordinator.Host.State.Runs.End(done, RunState.Completed, "1 of 2 rounds released", "coordinator");
        coordinator.Host.State.Runs.Create(orphan, Google.Protobuf.MessageExtensions.ToByteArray(plan), "recorded", 1.5, 1, initial, "engineer");

        var (code, output, error) = await AsAsync("officer", "run", "status", done, "--json");
        Assert.True(code == 0, error);
        JsonElement status = Json(output);
        Assert.Equal("completed", status.GetProperty("state").GetString());
        Assert.Equal(0.9, status.GetProperty("epsilon_spent").GetDouble());
        Assert.Equal(20.0, status.GetProperty("epsilon_budget").GetDouble());
        Assert.Equal(2u, status.GetProperty("planned_rounds").GetUInt32());
        Assert.Equal(released.Sha256, status.GetProperty("adapter_sha256").GetString());

        (code, output, _) = await AsAsync("engineer", "run", "status", done, "--watch", "--json");
        Assert.Equal(0, code);
        Assert.Equal("completed", Json(Assert.Single(output.Trim().Split('\n'))).GetProperty("state").GetString());

        // Recorded as pending behind this process's back (a restart resumes such runs; this one it never saw): the
        // watch shows the record once and ends instead of waiting for changes that cannot come.
        (code, output, error) = await AsAsync("engineer", "run", "status", orphan, "--json");
        Assert.True(code == 0, error);
        Assert.Equal("pending", Json(output).GetProperty("state").GetString());
        (code, _, error) = await AsAsync("engineer", "run", "status", orphan, "--watch");
        Assert.Equal(1, code);
        Assert.Contains("ended the watch of run " + orphan + " before the run ended", error, StringComparison.Ordinal);

        string exportDir = Path.Combine(coordinator.Root, "export-recorded");
        (code, output, error) = await AsAsync("engineer", "run", "export", done, "--out", exportDir);
        Assert.True(code == 0, error);
        Assert.Contains("signature verified", output, StringComparison.Ordinal);
        Assert.Contains("over 1 released rounds", output, StringComparison.Ordinal);
        Assert.All(PeftAdapter.Load(exportDir).Adapter.OnlyB().Flatten(), b => Assert.Equal(0.125f, b));
        // Download progress on stderr in text mode (stderr is not a terminal here: one line per report, the last at 100%),
        // and its numbers are the files' bytes; with --json nothing but the one object.
        long exportedBytes = Directory.EnumerateFiles(exportDir).Sum(f => new FileInfo(f).Length);
        Assert.Contains($"coordinator: downloaded {ExportProgress.Size(exportedBytes)} of {ExportProgress.Size(exportedBytes)} (100%)", error, StringComparison.Ordinal);
        (code, output, error) = await AsAsync("engineer", "run", "export", done, "--out", exportDir + "-json", "--json");
        Assert.True(code == 0, error);
        Assert.Equal("", error);
        Assert.True(Json(output).GetProperty("verified").GetBoolean());

        // A run that released nothing holds the untrained initial adapter: its export is refused, and nothing is written.
        string orphanExport = Path.Combine(coordinator.Root, "export-orphan");
        (code, _, error) = await AsAsync("engineer", "run", "export", orphan, "--out", orphanExport);
        Assert.Equal(1, code);
        Assert.Contains("has released no round", error, StringComparison.Ordinal);
        Assert.False(Directory.Exists(orphanExport) && Directory.EnumerateFileSystemEntries(orphanExport).Any());
    }

    [Fact]
    public async Task Lifecycle_StartWatchLedgerClientsExportAudit_EveryCommandAgainstOneRealRun()
    {
        var (code, output, error) = await AsAsync("officer", "budget", "set", "--epsilon", "50", "--delta", "1e-5", "--population", "lifecycle", "--json");
        Assert.True(code == 0, error);

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(180));
        RandomUpdateClient[] edgeClients = [.. s_clients.Select(name => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, coordinator.Address))];
        Task[] clients = [.. edgeClients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];
        (string Client, RoundManifest Manifest, int Dimension)[] Participated(string runId) =>
            [.. edgeClients.SelectMany(c => c.Manifests.Where(m => m.Round.RunId == runId).Select(m => (c.Name, m, c.Dimension)))];
        try
        {
            (code, output, error) = await AsAsync("engineer", "run", "start", "--base-model", BaseModel("base-life", 6), "--rank", "2",
                "--targets", "q_proj,v_proj", "--rounds", "1", "--clients-per-round", "3", "--local-steps", "1", "--learning-rate", "0.01",
                "--clip-norm", "1", "--mechanism", "distributed", "--noise", "0.5", "--delta", "1e-6", "--population", "lifecycle",
                "--min-survivors", "2", "--json");
            Assert.True(code == 0, error);
            JsonElement started = Json(output);
            string runId = started.GetProperty("run_id").GetString()!;
            double planned = started.GetProperty("planned_epsilon").GetDouble();
            Assert.Equal(0.5, started.GetProperty("noise_multiplier").GetDouble());
            Assert.Equal("lifecycle", started.GetProperty("population").GetString());

            (code, output, error) = await AsAsync("officer", "run", "status", runId, "--watch", "--json");
            Assert.True(code == 0, error);
            JsonElement[] updates = [.. output.Trim().Split('\n').Select(Json)];
            JsonElement last = updates[^1];
            Assert.Equal("completed", last.GetProperty("state").GetString());
            Assert.Equal(1u, last.GetProperty("round").GetUInt32());
            Assert.Equal(1u, last.GetProperty("planned_rounds").GetUInt32());
            Assert.Equal(1u, last.GetProperty("released_rounds").GetUInt32());
            Assert.Equal(0u, last.GetProperty("failed_rounds").GetUInt32());
            Assert.Empty(last.GetProperty("waiting_for").EnumerateArray());
            // Whatever snapshots the watch saw, a name it waited for is always one of the selected clients.
            Assert.All(updates.SelectMany(u => u.GetProperty("waiting_for").EnumerateArray()), w => Assert.Contains(w.GetString(), s_clients));
            Assert.Equal(planned, last.GetProperty("epsilon_spent").GetDouble(), 1e-9);
            Assert.Equal(50.0, last.GetProperty("epsilon_budget").GetDouble());
            Assert.All(updates, u =>
            {
                foreach (string key in new[] { "run_id", "state", "round", "planned_rounds", "released_rounds", "failed_rounds", "waiting_for", "stage", "selected", "reported", "epsilon_spent", "epsilon_budget", "detail", "adapter_sha256", "updated_at" })
                {
                    Assert.True(u.TryGetProperty(key, out _), key);
                }
            });

            (code, output, _) = await AsAsync("engineer", "run", "status", runId, "--json");
            Assert.Equal(0, code);
            JsonElement final = Json(output);
            Assert.Equal("completed", final.GetProperty("stage").GetString());
            Assert.Equal(3u, final.GetProperty("selected").GetUInt32());

            (code, output, _) = await AsAsync("engineer", "run", "status", runId);
            Assert.Equal(0, code);
            Assert.Contains("completed", output, StringComparison.Ordinal);
            Assert.Contains("1 of 1", output, StringComparison.Ordinal);
            Assert.Contains("rounds released", output, StringComparison.Ordinal);

            (code, output, _) = await AsAsync("officer", "ledger", "show", "--run", runId, "--json");
            Assert.Equal(0, code);
            JsonElement charge = Assert.Single(Json(output).GetProperty("entries").EnumerateArray());
            Assert.Equal(runId, charge.GetProperty("run_id").GetString());
            Assert.Equal(3u, charge.GetProperty("participants").GetUInt32());
            Assert.Equal(planned, charge.GetProperty("epsilon_after").GetDouble(), 1e-9);
            Assert.Equal("distributed_skellam", charge.GetProperty("mechanism").GetString());

            (code, output, _) = await AsAsync("officer", "ledger", "show", "--population", "lifecycle");
            Assert.Equal(0, code);
            Assert.Contains(runId, output, StringComparison.Ordinal);

            // One pricing across the three: the officer's calculator, what `run start` planned, and what each edge ledger
            // charges for the manifest it took part with (the edge's own recomputation of the plan).
            var (_, manifest, dimension) = Participated(runId).First();
            (code, output, error) = await RunAsync("privacy", "epsilon", "--mechanism", "distributed", "--dimension", dimension.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--clients", "3", "--threshold", "2", "--bits", "32", "--clip-norm", "1", "--noise-multiplier", "0.5", "--rounds", "1", "--delta", "1e-6", "--json");
            Assert.True(code == 0, error);
            JsonElement officer = Json(output);
            Assert.Equal(planned, officer.GetProperty("epsilon").GetDouble(), planned * 1e-12);
            Assert.Equal(("distributed_skellam", "client", "replace-one"), (officer.GetProperty("mechanism").GetString(),
                officer.GetProperty("privacy_unit").GetString(), officer.GetProperty("adjacency").GetString()));
            Assert.Equal(manifest.Dp.Scale, officer.GetProperty("scale").GetDouble(), manifest.Dp.Scale * 1e-12);
            Assert.Equal(("client", "replace-one"), (started.GetProperty("privacy_unit").GetString(), started.GetProperty("adjacency").GetString()));
            string edgeHome = Path.Combine(coordinator.Root, "edge-ledgers-" + runId);
            Directory.CreateDirectory(edgeHome);
            var edges = new Dictionary<string, LocalPrivacyLedger>(StringComparer.Ordinal);
            try
            {
                foreach ((string client, RoundManifest m, int d) in Participated(runId))
                {
                    if (!edges.TryGetValue(client, out LocalPrivacyLedger? edge))
                    {
                        edges[client] = edge = LocalPrivacyLedger.Open(Path.Combine(edgeHome, client + ".db"));
                    }
                    edge.Record(new LocalCharge(runId, m.Round.Round, NoiseMechanismKind.DistributedSkellam, m.Dp.NoiseMultiplier, 1.0, DateTimeOffset.UtcNow,
                        ManifestPrivacy.Parameters(m, d)));
                }
                Assert.Equal(s_clients.Order(), edges.Keys.Order());
                Assert.All(edges.Values, edge => Assert.Equal(planned, edge.Spent(1e-6).Epsilon, planned * 1e-12));

                // Each client's own epsilon on the coordinator equals its edge ledger's for the same rounds, at the population's delta.
                (code, output, _) = await AsAsync("engineer", "clients", "list", "--json");
                Assert.Equal(0, code);
                JsonElement[] listed = [.. Json(output).GetProperty("clients").EnumerateArray()];
                foreach (string name in s_clients)
                {
                    JsonElement client = Assert.Single(listed, c => c.GetProperty("client_id").GetString() == name);
                    Assert.True(client.GetProperty("rounds_participated").GetUInt32() >= 1);
                    Assert.Equal(64, client.GetProperty("certificate_sha256").GetString()!.Length);
                    Assert.Equal(("lifecycle", 1e-5, "client", "replace-one"), (client.GetProperty("population").GetString(), client.GetProperty("delta").GetDouble(),
                        client.GetProperty("privacy_unit").GetString(), client.GetProperty("adjacency").GetString()));
                    double own = edges[name].Spent(1e-5).Epsilon;
                    Assert.Equal(own, client.GetProperty("epsilon").GetDouble(), own * 1e-9);
                }
            }
            finally
            {
                foreach (LocalPrivacyLedger edge in edges.Values)
                {
                    edge.Dispose();
                }
            }
            (code, output, _) = await AsAsync("engineer", "clients", "list");
            Assert.Equal(0, code);
            Assert.Contains("alice", output, StringComparison.Ordinal);

            string exportDir = Path.Combine(coordinator.Root, "export-" + runId);
            (code, output, error) = await AsAsync("engineer", "run", "export", runId, "--out", exportDir, "--json");
            Assert.True(code == 0, error);
            JsonElement exported = Json(output);
            Assert.True(exported.GetProperty("verified").GetBoolean());
            Assert.Equal(["adapter.p7s", "adapter_config.json", "adapter_model.safetensors", "provenance.json"],
                exported.GetProperty("files").EnumerateArray().Select(f => f.GetProperty("name").GetString()));
            Assert.Equal(last.GetProperty("adapter_sha256").GetString(), exported.GetProperty("adapter_sha256").GetString());
            Assert.Equal(planned, exported.GetProperty("epsilon_spent").GetDouble(), 1e-9);
            Assert.Equal(1, exported.GetProperty("rounds_released").GetInt32());
            using (X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(coordinator.CaPath))
            using (X509Certificate2 signer = AdapterSignature.Verify(exportDir, ca))
            {
                Assert.Contains("adapter signer", signer.Subject, StringComparison.Ordinal);
            }
            (LoraSettings settings, AdapterTensors adapter, _) = PeftAdapter.Load(exportDir);
            Assert.Equal(2, settings.Rank);
            Assert.Contains(adapter.OnlyB().Flatten(), b => b != 0);
            Assert.Equal(last.GetProperty("adapter_sha256").GetString(),
                Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(exportDir, PeftAdapter.WeightsFileName)))));

            // A second export into the now non-empty folder is refused before connecting.
            (code, _, error) = await AsAsync("engineer", "run", "export", runId, "--out", exportDir);
            Assert.Equal(2, code);
            Assert.Contains("is not empty", error, StringComparison.Ordinal);

            // Officers cannot export.
            (code, _, error) = await AsAsync("officer", "run", "export", runId, "--out", Path.Combine(coordinator.Root, "officer-export"));
            Assert.Equal(1, code);
            Assert.Contains("PermissionDenied", error, StringComparison.Ordinal);

            (code, output, error) = await AsAsync("engineer", "audit", "show", "--limit", "10000", "--json");
            Assert.True(code == 0, error);
            JsonElement audit = Json(output);
            Assert.True(audit.GetProperty("verified").GetBoolean());
            JsonElement[] entries = [.. audit.GetProperty("entries").EnumerateArray()];
            Assert.Equal(audit.GetProperty("head_sequence").GetUInt64(), entries[^1].GetProperty("sequence").GetUInt64());
            Assert.Contains(entries, e => e.GetProperty("action").GetString() == "run.start" && e.GetProperty("details").GetProperty("run_id").GetString() == runId);
            Assert.Contains(entries, e => e.GetProperty("action").GetString() == "run.export" && e.GetProperty("actor").GetString() == "engineer");

            (code, output, _) = await AsAsync("officer", "audit", "show", "--from", "2", "--limit", "3");
            Assert.Equal(0, code);
            Assert.Contains("3 entries; chain links verified", output, StringComparison.Ordinal);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }
}
