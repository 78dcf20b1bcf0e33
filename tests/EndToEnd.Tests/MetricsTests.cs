using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Federated.Coordinator;
using Federated.Coordinator.State;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>Meters are found by name process-wide, so a scrape sees every coordinator host alive in the test process: these run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MetricsCollection
{
    public const string Name = "Metrics";
}

/// <summary>
/// `serve --metrics-port`: a Prometheus scrape of a real coordinator during and after a real one-round run over mutual
/// TLS finds the round, stage, epsilon and RPC series with the values the run had.
/// </summary>
[Collection(MetricsCollection.Name)]
public sealed partial class MetricsTests : IAsyncLifetime
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];
    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-metrics-" + Guid.NewGuid().ToString("N"));
    private readonly HttpClient _http = new();
    private TestFederation _federation = null!;
    private CoordinatorHost _host = null!;

    public async Task InitializeAsync()
    {
        _federation = TestFederation.Create(Path.Combine(_root, "pki"), s_clients);
        _host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = _federation.Directory, Port = 0, MetricsPort = 0, State = Path.Combine(_root, "state.db"), HeartbeatIntervalSeconds = 1 },
            logging => logging.SetMinimumLevel(LogLevel.Warning));
        await _host.StartAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _host.DisposeAsync();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }

    [Fact]
    public async Task Scrape_DuringAndAfterARealRound_RoundStageEpsilonAndRpcSeriesHoldTheRunsValues()
    {
        Uri metrics = _host.MetricsUri ?? throw new InvalidOperationException("no metrics endpoint");
        Assert.True(IPAddress.IsLoopback(IPAddress.Parse(metrics.Host)), "the scrape endpoint binds loopback by default");
        string baseModel = Path.Combine(_root, "base");
        TinyLlamaFactory.Write(baseModel, TinyLlamaFactory.DefaultConfig(), seed: 5);
        _host.State.Budgets.Set("metrics", 100, 1e-5, "officer");
        var plan = new RunPlan
        {
            BaseModel = baseModel, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.5, Delta = 1e-6, MinSurvivors = 2,
            Population = "metrics",
        };
        plan.TargetModules.Add("q_proj");
        using EdgeIdentity engineer = EdgeIdentity.Load(_federation.Identity("engineer"), _federation.CaPath);
        using var asEngineer = new CoordinatorConnection(_host.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        var during = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        // The first participant scrapes while the round is open, before it advertises its keys.
        RandomUpdateClient[] clients = [.. s_clients.Select(name => new RandomUpdateClient(name, _federation.Identity(name), _federation.CaPath, _host.Address)
        {
            BeforeStage = async (_, stage, ct) =>
            {
                if (name == s_clients[0] && stage == RoundStage.AdvertiseKeys && !during.Task.IsCompleted)
                {
                    during.TrySetResult(await _http.GetStringAsync(_host.MetricsUri, ct));
                }
            },
        })];
        Task[] running = [.. clients.Select(c => Task.Run(() => c.RunAsync(stop.Token)))];

        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(CancellationToken.None));
        using (AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = started.RunId }, asEngineer.Call(stop.Token)))
        {
            await foreach (RunStatus _ in watch.ResponseStream.ReadAllAsync(stop.Token))
            {
            }
        }
        await stop.CancelAsync();
        await Task.WhenAll(running.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));

        // While the round was open (scraped by a participant before it advertised its keys): started, not ended.
        Dictionary<string, double> open = Parse(await during.Task);
        Assert.Equal(1, Value(open, "federated_rounds_started_total", ("federated_run_id", started.RunId)));
        Assert.Equal(3, Value(open, "federated_round_participants_total", ("federated_run_id", started.RunId)));
        Assert.DoesNotContain(open.Keys, k => k.StartsWith("federated_rounds_ended_total", StringComparison.Ordinal) && k.Contains(started.RunId, StringComparison.Ordinal));

        Dictionary<string, double> after = Parse(await _http.GetStringAsync(metrics));
        Assert.Equal(1, Value(after, "federated_rounds_ended_total", ("federated_round_outcome", "released"), ("federated_run_id", started.RunId)));
        foreach (string stage in new[] { "advertise_keys", "share_keys", "masked_input", "unmask" })
        {
            Assert.Equal(1, Value(after, "federated_round_stage_duration_seconds_count", ("federated_round_stage", stage), ("federated_run_id", started.RunId)));
        }
        // The population's spend is the ledger's, to the last digit the exposition prints.
        BudgetRecord budget = _host.State.Budgets.Get("metrics")!;
        Assert.True(budget.EpsilonSpent > 0);
        Assert.Equal(budget.EpsilonSpent, Value(after, "federated_privacy_epsilon_spent", ("federated_population", "metrics")), 1e-9);
        Assert.Equal(100, Value(after, "federated_privacy_epsilon_budget", ("federated_population", "metrics")));
        Assert.Equal(0, Value(after, "federated_privacy_epsilon_reserved", ("federated_population", "metrics")));
        // Every participant advertised keys once, successfully; each uploaded its whole masked vector.
        Assert.Equal(3, Value(after, "federated_rpc_server_call_duration_seconds_count",
            ("rpc_grpc_status_code", "0"), ("rpc_method", "/federated.v1.EdgeService/AdvertiseKeys"), ("rpc_system", "grpc")));
        double ringLength = clients[0].Manifests.Single(m => m.Round.RunId == started.RunId).Secagg.VectorLength;
        Assert.Equal(3.0 * 4 * ringLength, Value(after, "federated_upload_bytes_total", ("federated_run_id", started.RunId)));
        Assert.Equal(0, after.Keys.Count(k => k.StartsWith("federated_round_dropouts_total", StringComparison.Ordinal) && k.Contains(started.RunId, StringComparison.Ordinal)));

        // Nothing but /metrics is served without TLS.
        using HttpResponseMessage other = await _http.GetAsync(new Uri(metrics, "/federated.v1.AdminService/ListClients"));
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
    }

    /// <summary>Prometheus text exposition: "name{labels} value" per sample line, keyed by name and labels as printed.</summary>
    private static Dictionary<string, double> Parse(string exposition)
    {
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string line in exposition.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }
            Match match = SampleLine().Match(line);
            Assert.True(match.Success, $"not a sample line: {line}");
            samples[match.Groups["key"].Value] = double.Parse(match.Groups["value"].Value, CultureInfo.InvariantCulture);
        }
        return samples;
    }

    /// <summary>The one sample of <paramref name="name"/> whose labels include every pair given.</summary>
    private static double Value(Dictionary<string, double> samples, string name, params (string Label, string Value)[] labels)
    {
        var matches = samples.Where(s => (s.Key == name || s.Key.StartsWith(name + "{", StringComparison.Ordinal))
            && labels.All(l => s.Key.Contains($"{l.Label}=\"{l.Value}\"", StringComparison.Ordinal))).ToList();
        Assert.True(matches.Count == 1, $"{matches.Count} samples of {name} with {string.Join(", ", labels)}; have: {string.Join(" | ", samples.Keys.Where(k => k.StartsWith(name, StringComparison.Ordinal)))}");
        return matches[0].Value;
    }

    [GeneratedRegex(@"^(?<key>[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?) (?<value>\S+)( \d+)?$")]
    private static partial Regex SampleLine();
}
