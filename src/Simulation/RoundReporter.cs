using Federated.Coordinator;
using Federated.Coordinator.State;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Trainer;
using Federated.Wire;
using Grpc.Core;

namespace Federated.Simulation;

/// <summary>
/// Watches the run as the engineer does (WatchRun) and reports each ended round once, in order: the ledger's epsilon,
/// the clients' training loss and the held-out loss of the global adapter it released.
/// </summary>
internal sealed class RoundReporter(
    CoordinatorHost host, AdminService.AdminServiceClient officerAdmin, CoordinatorConnection asOfficer, SimulatedClients clients,
    LlamaForCausalLM evaluator, IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> eval, Action<string> progress,
    Action<RoundReport>? roundFinished)
{
    private readonly List<RoundReport> _reports = [];

    /// <summary>Every round reported so far, the round-0 baseline first.</summary>
    public IReadOnlyList<RoundReport> Reports => _reports;

    /// <summary>Reports round 0: the held-out loss of the run's initial adapter, before any training.</summary>
    public void Baseline(string initialSha256)
    {
        LoadAdapter(host, initialSha256, evaluator);
        Add(new RoundReport(0, double.NaN, MeanEvalLoss(evaluator, eval), 0, 0, 0, 0, Released: true));
    }

    /// <summary>Follows the run until it ends, reporting each round as it ends; returns the run's last status.</summary>
    public async Task<RunStatus> WatchAsync(AdminService.AdminServiceClient admin, string runId, CancellationToken cancellationToken)
    {
        using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = runId }, new CallOptions(cancellationToken: cancellationToken));
        RunStatus? last = null;
        int reported = 0;
        int announced = 0;
        await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(cancellationToken))
        {
            last = status;
            if (status.State == RunState.Running && status.CurrentRound > announced)
            {
                announced = (int)status.CurrentRound;
                progress($"round {announced}: {status.Selected} clients selected; training locally, then SecAgg+");
            }
            reported = await ReportEndedRoundsAsync(runId, reported, cancellationToken);
        }
        await ReportEndedRoundsAsync(runId, reported, cancellationToken);
        return last ?? throw new InvalidOperationException("WatchRun ended without a status");
    }

    /// <summary>Applies the stored, signed global adapter <paramref name="sha256"/> to <paramref name="model"/> (replacing any adapter).</summary>
    public static bool LoadAdapter(CoordinatorHost host, string sha256, LlamaForCausalLM model)
    {
        if (host.Adapters.Read(sha256) is not { } content)
        {
            return false;
        }
        GlobalAdapterContent adapter = GlobalAdapterBlob.Read(content);
        if (model.Lora is not null)
        {
            model.RemoveLora();
        }
        PeftAdapter.Apply(adapter.Settings, adapter.Tensors, model);
        return true;
    }

    /// <summary>Mean over clients of each client's mean token loss on its own held-out split.</summary>
    public static double MeanEvalLoss(LlamaForCausalLM model, IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> eval) =>
        eval.Values.Average(batches => ModelEvaluator.Evaluate(model, batches).MeanLoss);

    /// <summary>Reports every round that ended since the last call, in order; returns the last round reported.</summary>
    private async Task<int> ReportEndedRoundsAsync(string runId, int reported, CancellationToken cancellationToken)
    {
        IReadOnlyList<EndedRound> ended = host.State.Rounds.ListEnded(runId, reported);
        if (ended.Count == 0)
        {
            return reported;
        }
        LedgerEntry[] ledger = [.. (await officerAdmin.GetLedgerAsync(new GetLedgerRequest { RunId = runId }, asOfficer.Call(cancellationToken))).Entries];
        foreach (EndedRound round in ended)
        {
            double epsilon = ledger.Where(l => l.Round <= round.Round).Select(l => l.EpsilonAfter).DefaultIfEmpty(0).Max();
            double evalLoss = _reports[^1].EvalLoss;
            if (round.AdapterSha256After is { } sha)
            {
                evalLoss = LoadAdapter(host, sha, evaluator) ? MeanEvalLoss(evaluator, eval) : double.NaN;
            }
            double trainLoss = await clients.MeanTrainLossAsync((uint)round.Round, round.Survivors, cancellationToken);
            // Released means a new adapter: a record-only run releases rounds without a client-level charge.
            bool released = round.AdapterSha256After is not null;
            int participants = released ? round.Survivors : 0;
            Add(new RoundReport(round.Round, trainLoss, evalLoss, epsilon, participants, round.Selected - participants,
                (round.EndedAt - round.StartedAt).TotalSeconds, released));
            reported = round.Round;
        }
        return reported;
    }

    private void Add(RoundReport report)
    {
        _reports.Add(report);
        roundFinished?.Invoke(report);
    }
}
