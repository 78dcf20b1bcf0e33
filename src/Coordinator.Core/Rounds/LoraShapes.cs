using Federated.Training.Lora;
using Federated.Training.Model;

namespace Federated.Coordinator.Rounds;

/// <summary>One LoRA-targeted linear layer: its module path (model.layers.N.self_attn.q_proj) and its in and out features.</summary>
internal sealed record LoraProjection(string ModulePath, long InFeatures, long OutFeatures);

/// <summary>
/// The shapes of a Llama-family model's LoRA adapter from config.json alone (A is [r, in], B is [out, r] per targeted
/// projection), so a run can be planned and its adapter built without loading the base model's weights. The sizes are
/// those of transformers' LlamaAttention (grouped key/value heads) and LlamaMLP (Phi3's fused projections on Phi-3).
/// </summary>
public static class LoraShapes
{
    /// <summary>
    /// Every targeted projection, layer by layer in the family's order (attention, then MLP), matched as
    /// <see cref="LlamaForCausalLM.AddLora"/> and PEFT match target_modules: names the family lacks are skipped.
    /// </summary>
    /// <exception cref="ArgumentException">None of the targets exists in this family.</exception>
    internal static IReadOnlyList<LoraProjection> Projections(LlamaConfig config, IReadOnlyList<string> targets)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(targets);
        long hidden = config.HiddenSize;
        long queries = (long)config.NumAttentionHeads * config.HeadDim;
        long keysValues = (long)config.NumKeyValueHeads * config.HeadDim;
        long intermediate = config.IntermediateSize;
        // transformers' Phi3Attention / Phi3MLP fuse q, k, v into qkv_proj and gate, up into gate_up_proj.
        (string Name, long In, long Out)[] layer = config.HasFusedProjections
            ?
            [
                ("self_attn.qkv_proj", hidden, queries + 2 * keysValues),
                ("self_attn.o_proj", queries, hidden),
                ("mlp.gate_up_proj", hidden, 2 * intermediate),
                ("mlp.down_proj", intermediate, hidden),
            ]
            :
            [
                ("self_attn.q_proj", hidden, queries),
                ("self_attn.k_proj", hidden, keysValues),
                ("self_attn.v_proj", hidden, keysValues),
                ("self_attn.o_proj", queries, hidden),
                ("mlp.gate_proj", hidden, intermediate),
                ("mlp.up_proj", hidden, intermediate),
                ("mlp.down_proj", intermediate, hidden),
            ];
        string[] matched = MatchedTargets(config, targets);
        var projections = new List<LoraProjection>();
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            foreach ((string name, long inFeatures, long outFeatures) in layer)
            {
                if (matched.Contains(name[(name.IndexOf('.') + 1)..]))
                {
                    projections.Add(new LoraProjection($"model.layers.{i}.{name}", inFeatures, outFeatures));
                }
            }
        }
        return projections;
    }

    /// <summary>The settings as the model applies them: target_modules narrowed to the names this family has, in its order.</summary>
    /// <exception cref="ArgumentException">None of the targets exists in this family.</exception>
    public static LoraSettings Effective(LlamaConfig config, LoraSettings settings)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(settings);
        return settings with { TargetModules = MatchedTargets(config, settings.TargetModules ?? config.AttentionProjectionNames) };
    }

    private static string[] MatchedTargets(LlamaConfig config, IReadOnlyList<string> targets)
    {
        string[] matched = config.ProjectionNames.Where(targets.Contains).ToArray();
        return matched.Length > 0
            ? matched
            : throw new ArgumentException(
                $"none of the LoRA target modules {string.Join(", ", targets)} exists in a {config.ModelType} model; its projections are {string.Join(", ", config.ProjectionNames)}",
                nameof(targets));
    }

    /// <summary>The length d of the aggregated vector: every lora_B value (the sum of out x r over the targeted projections).</summary>
    /// <exception cref="OverflowException">The adapter has more than int.MaxValue lora_B values.</exception>
    public static int BDimension(LlamaConfig config, LoraSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        return checked((int)Projections(config, Effective(config, settings).Targets).Sum(p => p.OutFeatures * settings.Rank));
    }
}
