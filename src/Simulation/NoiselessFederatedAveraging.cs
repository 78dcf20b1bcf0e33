using System.Security.Cryptography;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Trainer;

namespace Federated.Simulation;

/// <summary>
/// The memorisation audit's comparison without differential privacy: federated averaging (McMahan et al. 2017) of
/// the same FFA-LoRA updates with no clipping, no noise and no secure aggregation, in this process. Every client
/// trains from the global adapter each round exactly as an edge client does (same trainer, steps and learning rate);
/// the coordinator's part is the exact mean of the lora_B deltas.
/// </summary>
internal static class NoiselessFederatedAveraging
{
    /// <summary>Trains <paramref name="model"/>'s adapter (already attached: the run's initial adapter) in place.</summary>
    public static void Train(LlamaForCausalLM model, IReadOnlyList<IReadOnlyList<TokenBatch>> clients, int rounds, int localSteps, double learningRate,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clients);
        ArgumentOutOfRangeException.ThrowIfLessThan(clients.Count, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        if (model.Lora is null)
        {
            throw new InvalidOperationException("the comparison needs the run's initial adapter attached to the model");
        }
        var trainer = new LoraTrainer();
        for (int round = 0; round < rounds; round++)
        {
            AdapterTensors global = model.GetAdapter();
            AdapterTensors globalB = global.OnlyB();
            var sum = new double[globalB.ElementCount];
            foreach (IReadOnlyList<TokenBatch> batches in clients)
            {
                model.SetAdapter(global);
                TrainingResult trained = trainer.Train(model, batches, new TrainerOptions
                {
                    Steps = localSteps,
                    LearningRate = learningRate,
                    Seed = BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & long.MaxValue,
                }, cancellationToken: cancellationToken);
                float[] delta = trained.FlatDelta();
                if (delta.Length != sum.Length)
                {
                    throw new InvalidOperationException($"a client's delta has {delta.Length} values; lora_B has {sum.Length}");
                }
                for (int i = 0; i < delta.Length; i++)
                {
                    sum[i] += delta[i];
                }
            }
            var mean = new float[sum.Length];
            for (int i = 0; i < sum.Length; i++)
            {
                mean[i] = (float)(sum[i] / clients.Count);
            }
            AdapterTensors newB = globalB.Add(globalB.Unflatten(mean));
            AdapterTensors a = global.Select(global.Names.Where(n => !newB.Contains(n)));
            model.SetAdapter(new AdapterTensors(a.Tensors.Concat(newB.Tensors)));
        }
    }
}
