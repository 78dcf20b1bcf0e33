using System.Text.Json;
using Federated.Training.Tokenization;

namespace Federated.Training.Generation;

/// <summary>The token ids that end a model's turn: the tokenizer's EOS and the eos_token_id of config.json and generation_config.json.</summary>
/// <remarks>Instruction-tuned models often end turns with a token other than the tokenizer's EOS (Llama 3 lists three ids in generation_config.json).</remarks>
public static class StopTokens
{
    /// <summary>The ids, ascending; ids outside the vocabulary are dropped (the model can never produce them).</summary>
    public static IReadOnlyList<int> Read(string modelDirectory, ITextTokenizer tokenizer, int vocabSize)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = new SortedSet<int> { tokenizer.EosId };
        foreach (string file in new[] { "config.json", "generation_config.json" })
        {
            string path = Path.Combine(modelDirectory, file);
            if (File.Exists(path))
            {
                ids.UnionWith(EosIds(path));
            }
        }
        ids.RemoveWhere(id => id < 0 || id >= vocabSize);
        return [.. ids];
    }

    private static IEnumerable<int> EosIds(string path)
    {
        using JsonDocument document = Parse(path);
        if (document.RootElement.ValueKind != JsonValueKind.Object
            || !document.RootElement.TryGetProperty("eos_token_id", out JsonElement eos) || eos.ValueKind == JsonValueKind.Null)
        {
            return [];
        }
        IEnumerable<JsonElement> values = eos.ValueKind == JsonValueKind.Array ? eos.EnumerateArray().ToArray() : [eos];
        var ids = new List<int>();
        foreach (JsonElement value in values)
        {
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int id))
            {
                throw new InvalidDataException($"{path}: eos_token_id must be an integer or a list of integers");
            }
            ids.Add(id);
        }
        return ids;
    }

    private static JsonDocument Parse(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {ex.Message}", ex);
        }
    }
}
