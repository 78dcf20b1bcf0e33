using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Rounds large enough for the sparse SecAgg+ graph (<see cref="RoundGraph"/>), over mutual TLS: with a tenth of the
/// participants vanishing after sharing their keys the coordinator releases exactly the survivors' sum; with fewer
/// survivors than the release threshold (min_survivors) the round fails, though the graph could have unmasked them.
/// </summary>
public sealed class SparseRoundTests : IAsyncLifetime
{
    private const int Clients = 60;
    private const int Dropped = 6;
    private const int Length = 256;

    // Stages 1 and 2 close when all have answered; the masked-input stage waits for its deadline (3 x this) on the dropouts.
    private static readonly TimeSpan s_stageTimeout = TimeSpan.FromSeconds(8);

    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-sparse-" + Guid.NewGuid().ToString("N"));
    private readonly string[] _names = [.. Enumerable.Range(1, Clients).Select(i => $"client{i:D2}")];
    private readonly List<IDisposable> _owned = [];
    private readonly Dictionary<string, CoordinatorConnection> _connections = new(StringComparer.Ordinal);
    private CoordinatorHost? _host;

    private CoordinatorHost Host => _host ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync()
    {
        TestFederation federation = TestFederation.Create(Path.Combine(_root, "pki"), _names);
        _host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = Path.Combine(_root, "pki"), Port = 0, Address = "127.0.0.1", State = Path.Combine(_root, "state.db") },
            logging => logging.SetMinimumLevel(LogLevel.Warning));
        await _host.StartAsync(CancellationToken.None);
        // Connected and registered before the round opens, so the stage clock runs on the protocol, not on TLS handshakes.
        foreach (string name in _names)
        {
            var identity = EdgeIdentity.Load(federation.Identity(name), federation.CaPath);
            var connection = new CoordinatorConnection(_host.Address, identity);
            _owned.Add(connection);
            _owned.Add(identity);
            _connections[name] = connection;
            await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        }
    }

    public async Task DisposeAsync()
    {
        foreach (IDisposable owned in _owned)
        {
            owned.Dispose();
        }
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }
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
    public async Task Round_SixtyClientsATenthVanishAfterSharingKeys_SparseGraphReleasesExactSurvivorSum()
    {
        int minSurvivors = RunPlanValidation.DefaultThreshold(Clients);
        (int degree, int threshold) = RoundGraph.Choose(Clients, minSurvivors);
        FakeTimeProvider clock = RoundClock.Create();
        SecAggRound round = Host.Rounds.Start(new SecAggRoundPlan("sparse-run", 1, _names, Length, 32, degree, threshold, s_stageTimeout, MinSurvivors: minSurvivors), clock: clock);
        try
        {
            Assert.InRange(degree, 2, Clients - 2);
            Assert.True(2 * threshold > degree + 1, $"t = {threshold} must be above half of k + 1 = {degree + 1}");
            Assert.True(threshold < minSurvivors);
            Dictionary<string, uint[]> inputs = _names.ToDictionary(n => n, _ => RandomVector());
            HashSet<string> vanishing = [.. _names.Take(Dropped)];
            Task<ParticipationOutcome>[] running = [.. _names.Select(n => ParticipateAsync(n, inputs[n], round.Ref, vanishing.Contains(n)))];

            await RoundClock.ExpireStageAsync(round, clock, RoundStage.MaskedInput, [.. vanishing]);
            uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromSeconds(120));

            Assert.Equal(ExpectedSum(_names.Where(n => !vanishing.Contains(n)).Select(n => inputs[n])), sum);
            Assert.Equal(Clients - Dropped, round.Survivors.Count);
            Assert.Equal(RoundStage.Completed, round.Stage);
            ParticipationOutcome[] survivors = await Task.WhenAll(running[Dropped..]);
            // Each survivor only ever hears of the dropouts among its own k neighbours.
            Assert.All(survivors, s => Assert.InRange(s.Dropped.Count, 0, Dropped));
            Assert.Contains(survivors, s => s.Dropped.Count > 0);
            foreach (Task<ParticipationOutcome> vanished in running[..Dropped])
            {
                await Assert.ThrowsAsync<DroppedOutException>(() => vanished);
            }
        }
        finally
        {
            Host.Rounds.Finish(round);
        }
    }

    [Fact]
    public async Task Round_FewerSurvivorsThanMinSurvivors_FailsBeforeAnyShareIsRevealedThoughTheGraphCouldUnmask()
    {
        // The graph of the round above (which unmasked 54 survivors), with a release threshold of 58.
        (int degree, int threshold) = RoundGraph.Choose(Clients, RunPlanValidation.DefaultThreshold(Clients));
        FakeTimeProvider clock = RoundClock.Create();
        SecAggRound round = Host.Rounds.Start(new SecAggRoundPlan("sparse-short", 1, _names, Length, 32, degree, threshold, s_stageTimeout, MinSurvivors: 58), clock: clock);
        try
        {
            HashSet<string> vanishing = [.. _names.Take(Dropped)];
            Task<ParticipationOutcome>[] running = [.. _names.Select(n => ParticipateAsync(n, RandomVector(), round.Ref, vanishing.Contains(n)))];

            await RoundClock.ExpireStageAsync(round, clock, RoundStage.MaskedInput, [.. vanishing]);
            var failed = await Assert.ThrowsAsync<InsufficientSurvivorsException>(() => round.Sum.WaitAsync(TimeSpan.FromSeconds(120)));

            Assert.Contains("release threshold 58", failed.Message, StringComparison.Ordinal);
            Assert.Equal(RoundStage.Failed, round.Stage);
            // No unmask request went out: every survivor's upload long poll ended with the failure.
            foreach (Task<ParticipationOutcome> survivor in running[Dropped..])
            {
                await Assert.ThrowsAnyAsync<Exception>(() => survivor);
            }
            Assert.Empty(round.Survivors);
        }
        finally
        {
            Host.Rounds.Finish(round);
        }
    }

    private async Task<ParticipationOutcome> ParticipateAsync(string name, uint[] input, RoundRef expected, bool vanish)
    {
        CoordinatorConnection connection = _connections[name];
        HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
        Assert.Equal(expected, heartbeat.Invitation);
        var participant = new SecAggParticipant(connection, name)
        {
            BeforeStage = (stage, _) => vanish && stage == RoundStage.MaskedInput ? throw new DroppedOutException($"{name} vanished before {stage}") : Task.CompletedTask,
        };
        RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
        // A copy: the participant masks the vector it is given in place, and the test sums the originals.
        return await participant.ParticipateAsync(manifest, (_, _) => Task.FromResult<uint[]>([.. input]), CancellationToken.None);
    }

    private static uint[] RandomVector()
    {
        byte[] bytes = RandomNumberGenerator.GetBytes(4 * Length);
        return [.. Enumerable.Range(0, Length).Select(i => BitConverter.ToUInt32(bytes, 4 * i))];
    }

    private static uint[] ExpectedSum(IEnumerable<uint[]> vectors)
    {
        var sum = new uint[Length];
        foreach (uint[] v in vectors)
        {
            for (int i = 0; i < Length; i++)
            {
                sum[i] = unchecked(sum[i] + v[i]);
            }
        }
        return sum;
    }
}
