namespace Federated.Training.Data;

/// <summary>One tokenized example: the ids the model reads and, per position, the id it must predict there.</summary>
/// <remarks>
/// <see cref="Labels"/> has the same length as <see cref="InputIds"/>; <c>Labels[i]</c> is the target for the logits
/// at position i (already shifted: normally <c>InputIds[i + 1]</c>), or <see cref="IgnoreIndex"/> where no loss is
/// taken (prompt tokens, padding, the last position).
/// </remarks>
public sealed record TokenizedExample(int[] InputIds, int[] Labels)
{
    /// <summary>The label value that carries no loss (PyTorch's cross-entropy ignore_index).</summary>
    public const int IgnoreIndex = -100;
}

/// <summary>A padded batch in row-major [BatchSize, SequenceLength] layout, ready to become tensors.</summary>
/// <remarks>AttentionMask is 1 for real tokens and 0 for padding; padded positions carry IgnoreIndex labels.</remarks>
public sealed record TokenBatch(long[] InputIds, long[] Labels, long[] AttentionMask, int BatchSize, int SequenceLength)
{
    /// <summary>Number of positions that carry a loss.</summary>
    public int TargetTokens => Labels.Count(l => l != TokenizedExample.IgnoreIndex);
}
