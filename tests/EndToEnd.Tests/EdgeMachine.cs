using System.Threading.Channels;
using Federated.Aggregation.SecureAggregation;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;
using TorchSharp;

namespace Federated.EndToEnd.Tests;

/// <summary>How one invitation ended on an edge machine: the worker's result, or the error that ended the round for it.</summary>
internal sealed record EdgeOutcome(RoundRef Invitation, RoundWorkResult? Result, Exception? Error);

/// <summary>
/// One real edge machine in process: its identity, its own SQLite ledger, its kept CRL and its policy gate, and the
/// loop of `edge-client run` (<see cref="EdgeSession"/> handing each invitation to <see cref="EdgeRoundWorker"/>; one
/// round going wrong ends that round, never the loop). Each invitation's outcome is queued for the test.
/// </summary>
internal sealed class EdgeMachine : IAsyncDisposable
{
    private readonly EdgeIdentity _identity;
    private readonly CoordinatorConnection _connection;
    private readonly CancellationTokenSource _stop = new();
    private readonly Channel<EdgeOutcome> _outcomes = Channel.CreateUnbounded<EdgeOutcome>();
    private readonly Task _loop;

    private EdgeMachine(TestFederation federation, string name, string modelDirectory, Uri coordinator, LocalPolicy policy, string home, Action<string> log)
    {
        Directory.CreateDirectory(home);
        Home = home;
        _identity = EdgeIdentity.Load(federation.Identity(name), federation.CaPath);
        Model = LlamaForCausalLM.FromPretrained(modelDirectory, torch.CPU);
        Ledger = LocalPrivacyLedger.Open(Path.Combine(home, LocalPrivacyLedger.FileName));
        _connection = new CoordinatorConnection(coordinator, _identity, revocation: EdgeRevocationList.Open(Path.Combine(home, EdgeRevocationList.FileName), _identity.Ca));
        var worker = new EdgeRoundWorker(_connection, name, Model, Batches(modelDirectory, name), new LocalPolicyGate(policy, Ledger, TimeProvider.System))
        {
            Report = change => log($"{name}: {change.Text}"),
        };
        var session = new EdgeSession(_connection, new RegisterRequest { ClientVersion = "test", Device = "cpu" });
        _loop = Task.Run(() => session.RunAsync(async (invitation, ct) =>
        {
            try
            {
                _outcomes.Writer.TryWrite(new EdgeOutcome(invitation, await worker.HandleAsync(invitation, ct), null));
            }
            catch (Exception ex) when ((ex is RpcException or InvalidDataException or InvalidOperationException or SecureAggregationException) && !ct.IsCancellationRequested)
            {
                // As edge-client run: the round ends without this client, the client goes on.
                log($"{name}: round {invitation.Round} of {invitation.RunId} ended without this client: {ex.Message}");
                _outcomes.Writer.TryWrite(new EdgeOutcome(invitation, null, ex));
            }
        }, _stop.Token));
    }

    public LlamaForCausalLM Model { get; }

    /// <summary>The machine's folder: its ledger file and its kept CRL.</summary>
    public string Home { get; }

    public LocalPrivacyLedger Ledger { get; }

    /// <summary>Whether the edge's loop is still running (it stops only when disposed).</summary>
    public bool Running => !_loop.IsCompleted;

    public static EdgeMachine Start(TestFederation federation, string name, string modelDirectory, Uri coordinator, LocalPolicy policy, string home, Action<string> log) =>
        new(federation, name, modelDirectory, coordinator, policy, home, log);

    /// <summary>The outcome of the next invitation this edge handles (a guard against a hang, not a timing assertion).</summary>
    public async Task<EdgeOutcome> NextOutcomeAsync() =>
        await _outcomes.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromMinutes(3));

    /// <summary>A policy generous enough for the tiny rounds of these tests, with optional worst-case caps.</summary>
    public static LocalPolicy Policy(double? maxWorstCaseEpsilonPerRun = null) => new()
    {
        Delta = 1e-5, MaxEpsilonPerRun = 1000, MaxEpsilonLifetime = 10_000, MinNoiseMultiplier = 0.1,
        AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam], AllowedTargetModules = ["q_proj", "v_proj"], MaxRank = 16, MaxRoundsPerDay = 100,
        MaxWorstCaseEpsilonPerRun = maxWorstCaseEpsilonPerRun,
    };

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (Exception ex) when (ex is OperationCanceledException or RpcException)
        {
            // Stopped by the test.
        }
        _connection.Dispose();
        Ledger.Dispose();
        Model.Dispose();
        _identity.Dispose();
        _stop.Dispose();
    }

    private static IReadOnlyList<TokenBatch> Batches(string modelDirectory, string name)
    {
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(modelDirectory);
        string[] text = [$"{name} keeps the records of the cat that sat on the mat", $"{name} knows the dog that ran in the park"];
        JsonlDataset set = JsonlDataset.Parse(text.Select(t => System.Text.Json.JsonSerializer.Serialize(new { text = t })), name, tokenizer, new DatasetOptions { MaxLength = 32 });
        return TokenBatcher.Batches(set.Examples, 2, tokenizer.PadId, shuffleSeed: 1);
    }
}
