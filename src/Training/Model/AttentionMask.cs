using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>What every decoder layer of one forward pass shares: rotary tables, the two masks and the cache.</summary>
/// <param name="FullMask">Boolean [B or 1, 1, T, S] (true = attend) for full-attention layers; null means plain causal attention over T keys.</param>
/// <param name="SlidingMask">The same for sliding-window layers; null means plain causal attention over T keys.</param>
/// <param name="Cache">Keys and values of earlier positions, extended by this pass; null when the pass sees the whole sequence.</param>
internal sealed record AttentionInputs(Tensor Cos, Tensor Sin, Tensor? FullMask, Tensor? SlidingMask, KvCache? Cache)
{
    public Tensor? MaskFor(bool sliding) => sliding ? SlidingMask : FullMask;
}

/// <summary>Boolean attention masks: causal, optionally windowed, optionally hiding padded keys.</summary>
internal static class AttentionMask
{
    /// <summary>
    /// The mask for T queries at positions past .. past + T - 1 over S = past + T keys, or null when it is the plain
    /// causal mask of a pass with no past (the fused causal path is faster than an explicit mask).
    /// </summary>
    /// <param name="keyPadding">[B, S] with 1 for tokens and 0 for padding, or null; all ones counts as null.</param>
    /// <param name="window">Sliding window: a query sees keys q - window &lt; k &lt;= q (transformers' sliding_window_overlay), or null.</param>
    public static Tensor? Build(long past, long length, int? window, Tensor? keyPadding, Device device)
    {
        long keys = past + length;
        bool windowBites = window is { } w && keys > w;
        Tensor? keep = null;
        if (keyPadding is not null)
        {
            keep = keyPadding.to(device).to_type(ScalarType.Bool);
            if (keep.all().item<bool>())
            {
                keep = null;
            }
        }
        if (past == 0 && !windowBites && keep is null)
        {
            return null;
        }
        Tensor queryPositions = torch.arange(past, keys, ScalarType.Int64, device).unsqueeze(1); // [T, 1]
        Tensor keyPositions = torch.arange(keys, ScalarType.Int64, device).unsqueeze(0); // [1, S]
        Tensor allowed = keyPositions.le(queryPositions);
        if (windowBites)
        {
            allowed = allowed.logical_and(keyPositions.gt(queryPositions - window!.Value));
        }
        if (keep is not null)
        {
            // Every query may see itself, so a row of padding never becomes all -inf (NaN); its loss is ignored anyway.
            Tensor self = keyPositions.eq(queryPositions);
            Tensor keysKept = keep.unsqueeze(1).unsqueeze(2); // [B, 1, 1, S]
            return allowed.logical_and(keysKept.logical_or(self));
        }
        return allowed.unsqueeze(0).unsqueeze(0);
    }
}
