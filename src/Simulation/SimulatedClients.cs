using System.Collections.Concurrent;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Grpc.Core;
using TorchSharp;

namespace Federated.Simulation;

/// <summary>
/// The simulation's edge clients, each in this process with its own identity, mTLS channel, local policy and ledger,
/// taking part in rounds as a real `edge-client run` would; what each reported per round is kept for the round table.
/// </summary>
internal sealed class SimulatedClients(SimulationOptions options, Action<string> progress)
{
    private readonly ConcurrentDictionary<(uint Round, string Client), RoundWorkResult> _work = new();
    private readonly ConcurrentQueue<string> _stopped = new();
    private readonly ConcurrentDictionary<(string RunId, string Client), double> _recordEpsilon = new();

    /// <summary>Each client's record-level epsilon for <paramref name="runId"/>, as its own ledger last priced it.</summary>
    public IReadOnlyDictionary<string, double> RecordEpsilons(string runId) =>
        _recordEpsilon.Where(p => p.Key.RunId == runId).ToDictionary(p => p.Key.Client, p => p.Value, StringComparer.Ordinal);

    /// <summary>Starts every client; each runs until <paramref name="cancellationToken"/> is cancelled.</summary>
    public Task[] Start(IReadOnlyList<string> names, Uri address, string pki, string ca, string model, IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> train,
        IReadOnlyDictionary<string, RecordLevelData> records, string root, CancellationToken cancellationToken)
    {
        string policy = WritePolicy(root);
        return [.. names.Select(name => Task.Run(() => ClientAsync(name, address, pki, ca, model, policy, train[name], records[name], root, cancellationToken), CancellationToken.None))];
    }

    /// <summary>Waits until <paramref name="count"/> clients are registered and available, as the engineer's client list shows them.</summary>
    public async Task WaitForRegisteredAsync(AdminService.AdminServiceClient admin, CoordinatorConnection asEngineer, int count, Task[] clients, CancellationToken cancellationToken)
    {
        // The run would wait for them too; waiting here keeps round 1's time about the round, not about start-up.
        DateTimeOffset giveUp = DateTimeOffset.UtcNow.AddMinutes(2);
        while (true)
        {
            ListClientsResponse listed = await admin.ListClientsAsync(new ListClientsRequest { SeenWithinSeconds = 3 }, asEngineer.Call(cancellationToken));
            int available = listed.Clients.Count(c => c.Available);
            if (available >= count)
            {
                break;
            }
            if (clients.Any(c => c.IsCompleted))
            {
                throw new InvalidOperationException($"an edge client stopped before the run: {_stopped.FirstOrDefault() ?? "no reason given"}");
            }
            if (DateTimeOffset.UtcNow > giveUp)
            {
                throw new TimeoutException($"only {available} of {count} edge clients registered within 2 minutes");
            }
            await Task.Delay(100, cancellationToken);
        }
        progress($"{count} edge clients registered over mutual TLS");
    }

    /// <summary>Mean over the round's participants of their last local step's training loss.</summary>
    public async Task<double> MeanTrainLossAsync(uint round, int survivors, CancellationToken cancellationToken)
    {
        // A client's result is recorded when its last SecAgg+ reply returns, which may trail the coordinator's release a little.
        for (int i = 0; i < 100 && _work.Keys.Count(k => k.Round == round) < survivors; i++)
        {
            await Task.Delay(50, cancellationToken);
        }
        double[] losses = [.. _work.Where(w => w.Key.Round == round && w.Value.Participated).Select(w => w.Value.LastLoss)];
        return losses.Length == 0 ? double.NaN : losses.Average();
    }

    private async Task ClientAsync(string name, Uri address, string pki, string ca, string model, string policyPath, IReadOnlyList<TokenBatch> batches,
        RecordLevelData records, string root, CancellationToken cancellationToken)
    {
        try
        {
            string home = Path.Combine(root, "clients", name);
            Directory.CreateDirectory(home);
            using EdgeIdentity identity = EdgeIdentity.Load(Path.Combine(pki, name + ".pfx"), ca);
            using var connection = new CoordinatorConnection(address, identity);
            using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(Path.Combine(home, LocalPrivacyLedger.FileName));
            using LlamaForCausalLM local = LlamaForCausalLM.FromPretrained(model, torch.CPU);
            var gate = new LocalPolicyGate(LocalPolicy.Load(policyPath), ledger, TimeProvider.System);
            var worker = new EdgeRoundWorker(connection, name, local, batches, gate)
            {
                Report = options.Verbose ? e => progress($"{name}: {e.Text}") : null,
                Records = records,
            };
            var session = new EdgeSession(connection, new RegisterRequest { ClientVersion = "simulate", Device = "cpu" });
            await session.RunAsync(async (invitation, ct) =>
            {
                try
                {
                    RoundWorkResult result = await worker.HandleAsync(invitation, ct);
                    _work[(result.Round, name)] = result;
                    _recordEpsilon[(result.RunId, name)] = ledger.RecordEpsilon(options.Delta, result.RunId);
                }
                catch (Exception ex) when ((ex is RpcException or InvalidDataException or InvalidOperationException) && !ct.IsCancellationRequested)
                {
                    // One client's failure is a dropout for the round, as it would be on a real network.
                    progress($"{name}: round {invitation.Round} failed on this client: {ex.Message}");
                }
            }, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The simulation is over.
        }
        catch (RpcException ex) when (cancellationToken.IsCancellationRequested && ex.StatusCode == StatusCode.Cancelled)
        {
            // The simulation is over.
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            _stopped.Enqueue($"{name}: {ex.Message}");
            progress($"{name}: stopped: {ex.Message}");
        }
    }

    /// <summary>The clients' local policy: it allows this demo's plan and nothing looser (minimum noise = the plan's noise).</summary>
    private string WritePolicy(string root)
    {
        string path = Path.Combine(root, LocalPolicy.FileName);
        string json = System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["delta"] = options.Delta,
            // The edge accounts for itself (Gaussian RDP of z at sampling rate 1), whatever the coordinator claims.
            // A demo with a handful of clients spends a lot (see the README); these are the policy format's upper limits.
            ["max_epsilon_per_run"] = 100,
            ["max_epsilon_lifetime"] = 1000,
            ["min_noise_multiplier"] = options.NoiseMultiplier,
            ["allowed_mechanisms"] = new[] { "distributed_skellam" },
            ["allowed_target_modules"] = options.Targets,
            ["max_rank"] = options.Rank,
            ["max_rounds_per_day"] = 100_000,
            // The policy format's upper limit: the demo shows the record-level epsilon it reaches rather than capping it.
            ["max_record_epsilon"] = 1000,
        });
        File.WriteAllText(path, json);
        return path;
    }
}
