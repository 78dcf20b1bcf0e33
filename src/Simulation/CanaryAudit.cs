using Federated.Coordinator;
using Federated.Training.Data;
using Federated.Training.Memorisation;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Tokenization;
using TorchSharp;

namespace Federated.Simulation;

/// <summary>
/// The memorisation audit: each planted canary's exposure under the exported DP adapter, against the same training
/// without DP (plain federated averaging from the run's initial adapter: no clipping, no noise, no SecAgg).
/// </summary>
internal sealed class CanaryAudit(SimulationOptions options, Action<string> progress)
{
    /// <summary>Measures every canary with and without DP; also returns the held-out loss of the model trained without DP.</summary>
    public async Task<(IReadOnlyList<CanaryReport> Canaries, double NoDpEvalLoss)> RunAsync(CoordinatorHost host, string model, HuggingFaceTokenizer tokenizer,
        CanaryFormat format, string[] secrets, IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> train, IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> eval,
        string initialSha, string outDirectory, CancellationToken cancellationToken)
    {
        IReadOnlyList<string> candidates = CanaryExposure.SampleCandidates(format, options.CanaryCandidates, secrets);
        progress($"memorisation audit: ranking each canary against {candidates.Count} random secrets with the exported adapter");
        IReadOnlyList<CanaryExposureResult> withDp;
        using (LlamaForCausalLM dpModel = LlamaForCausalLM.FromPretrained(model, torch.CPU))
        {
            PeftAdapter.Apply(outDirectory, dpModel);
            withDp = CanaryExposure.Measure(dpModel, tokenizer, format, secrets, candidates, cancellationToken);
        }

        progress($"training the comparison without DP: the same clients, data, rounds, steps and learning rate, plain federated averaging (no clipping, no noise, no SecAgg)");
        using LlamaForCausalLM plain = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        if (!RoundReporter.LoadAdapter(host, initialSha, plain))
        {
            throw new InvalidOperationException($"the run's initial adapter {initialSha} is not in the coordinator's store");
        }
        await Task.Run(() => NoiselessFederatedAveraging.Train(plain, [.. train.Values], options.Rounds, options.LocalSteps, options.LearningRate, cancellationToken), cancellationToken);
        double noDpEval = RoundReporter.MeanEvalLoss(plain, eval);
        IReadOnlyList<CanaryExposureResult> withoutDp = CanaryExposure.Measure(plain, tokenizer, format, secrets, candidates, cancellationToken);
        return ([.. secrets.Select((s, i) => new CanaryReport(s, withDp[i], withoutDp[i]))], noDpEval);
    }
}
