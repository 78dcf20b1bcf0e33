using Federated.Training.Tokenization;

namespace Federated.Training.Data;

/// <summary>A growing token sequence with, per token, whether the model is trained to predict it.</summary>
internal sealed class TokenSequence
{
    public List<int> Ids { get; } = [];

    public List<bool> IsTarget { get; } = [];

    public int Count => Ids.Count;

    public int TargetCount => IsTarget.Count(t => t);

    public void Add(int id, bool isTarget)
    {
        Ids.Add(id);
        IsTarget.Add(isTarget);
    }

    public void AddText(ITextTokenizer tokenizer, string text, bool isTarget)
    {
        foreach (int id in tokenizer.Encode(text))
        {
            Add(id, isTarget);
        }
    }

    /// <summary>Cuts [start, start + length) into an example whose labels are already shifted for causal LM loss.</summary>
    public TokenizedExample ToExample(int start, int length)
    {
        var ids = new int[length];
        var labels = new int[length];
        for (int i = 0; i < length; i++)
        {
            ids[i] = Ids[start + i];
            // Position i predicts token i + 1; the last position of a block has nothing to predict inside it.
            labels[i] = i + 1 < length && IsTarget[start + i + 1] ? Ids[start + i + 1] : TokenizedExample.IgnoreIndex;
        }
        return new TokenizedExample(ids, labels);
    }
}
