using Federated.Training.Lora;
using Federated.Training.Model;

namespace Federated.Coordinator.Rounds;

/// <summary>One LoRA-targeted linear layer: its module path (model.layers.N.self_attn.q_proj) and its in and out features.</summary>
internal sealed record LoraProjection(string ModulePath, long InFeatures, long OutFeatures);

/// <summary>
/// The shapes of a Llama-family model's LoRA adapter from config.json alone (A is [r, in], B is [out, r] per targeted
/// projection), so a run can be planned and its adapter built without loading the base model's weights. The sizes are
/// those of transformers' LlamaAttention (grouped key/value heads) and LlamaMLP.
/// </summary>
public static class LoraShapes
{
    /// <summary>Every targeted projection, layer by layer in the model's order (attention q, k, v, o, then MLP gate, up, down).</summary>
    internal static IReadOnlyList<LoraProjection> Projections(LlamaConfig config, IReadOnlyList<string> targets)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(targets);
        long hidden = config.HiddenSize;
        long queries = (long)config.NumAttentionHeads * config.HeadDim;
        long keysValues = (long)config.NumKeyValueHeads * config.HeadDim;
        long intermediate = config.IntermediateSize;
        (string Name, long In, long Out)[] layer =
        [
            ("self_attn.q_proj", hidden, queries),
            ("self_attn.k_proj", hidden, keysValues),
            ("self_attn.v_proj", hidden, keysValues),
            ("self_attn.o_proj", queries, hidden),
            ("mlp.gate_proj", hidden, intermediate),
            ("mlp.up_proj", hidden, intermediate),
            ("mlp.down_proj", intermediate, hidden),
        ];
        var projections = new List<LoraProjection>();
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            foreach ((string name, long inFeatures, long outFeatures) in layer)
            {
                if (targets.Contains(name[(name.IndexOf('.') + 1)..]))
                {
                    projections.Add(new LoraProjection($"model.layers.{i}.{name}", inFeatures, outFeatures));
                }
            }
        }
        return projections;
    }

    /// <summary>The length d of the aggregated vector: every lora_B value (the sum of out x r over the targeted projections).</summary>
    /// <exception cref="OverflowException">The adapter has more than int.MaxValue lora_B values.</exception>
    public static int BDimension(LlamaConfig config, LoraSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        return checked((int)Projections(config, settings.Targets).Sum(p => p.OutFeatures * settings.Rank));
    }
}
