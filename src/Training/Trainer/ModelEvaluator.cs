using Federated.Training.Data;
using Federated.Training.Model;
using TorchSharp;

namespace Federated.Training.Trainer;

/// <summary>Mean token cross-entropy and its perplexity over a set of batches.</summary>
public sealed record EvaluationResult(double MeanLoss, double Perplexity, long Tokens);

/// <summary>Evaluates a model (with its adapter, if any and enabled) without gradients.</summary>
public static class ModelEvaluator
{
    /// <summary>Sum of token losses over all labelled positions divided by their count; perplexity = exp(mean).</summary>
    public static EvaluationResult Evaluate(LlamaForCausalLM model, IEnumerable<TokenBatch> batches,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        bool wasTraining = model.training;
        model.eval();
        double lossSum = 0;
        long tokens = 0;
        try
        {
            using var noGrad = torch.no_grad();
            foreach (var batch in batches)
            {
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var (ids, labels, mask) = LoraTrainer.ToTensors(batch, model.Device);
                lossSum += model.SummedTokenLoss(ids, labels, mask).to_type(torch.ScalarType.Float64).item<double>();
                tokens += batch.TargetTokens;
            }
        }
        finally
        {
            model.train(wasTraining);
        }
        if (tokens == 0)
        {
            throw new InvalidDataException("evaluation data has no labelled tokens");
        }
        double mean = lossSum / tokens;
        return new EvaluationResult(mean, Math.Exp(mean), tokens);
    }
}
