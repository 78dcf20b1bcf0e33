using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

// Incremental inference for generation: each pass sees only the new tokens and reads the earlier ones from a cache.
public sealed partial class LlamaForCausalLM
{
    /// <summary>
    /// Logits [B, T, vocab] of the new tokens <paramref name="inputIds"/> [B, T] that follow the cached ones; their keys
    /// and values are added to <paramref name="cache"/>. Inference only (no gradients); no padding.
    /// </summary>
    internal Tensor ForwardCached(Tensor inputIds, KvCache cache)
    {
        RequireIds(inputIds);
        ArgumentNullException.ThrowIfNull(cache);
        if (cache.Layers != Config.NumHiddenLayers)
        {
            throw new ArgumentException($"the cache has {cache.Layers} layers; the model has {Config.NumHiddenLayers}", nameof(cache));
        }
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor ids = inputIds.device == Device ? inputIds : inputIds.to(Device);
        long length = ids.shape[1];
        if (cache.Length > 0 && _rotary.UsesLongFactors(cache.Length + length) != cache.LongFactors)
        {
            // LongRoPE moved every position to its long factors: the cached keys were rotated with the short ones.
            Tensor all = torch.cat([cache.TokenIds(), ids], 1);
            cache.Clear();
            return ForwardCached(all, cache).narrow(1, all.shape[1] - length, length).MoveToOuterDisposeScope();
        }
        long past = cache.Length;
        cache.LongFactors = _rotary.UsesLongFactors(past + length);
        Tensor hidden = _model.Forward(ids, Inputs(past, length, null, cache), checkpoint: false);
        cache.Advance(ids);
        return HeadLogits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>A fresh cache for this model's layers.</summary>
    internal KvCache NewCache(long capacity = 256) => new(Config.NumHiddenLayers, capacity);
}
