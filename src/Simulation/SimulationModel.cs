using System.Security.Cryptography;
using Federated.EdgeClient.Rounds;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;

namespace Federated.Simulation;

/// <summary>The simulation's base model and data: a random tiny Llama when none is given, its config and tokenizer, and each client's token batches.</summary>
internal static class SimulationModel
{
    private const int BatchSize = 4;
    private const double TinyInitStd = 0.1;

    /// <summary>Longest sequence the simulation trains on (or the model's own limit when shorter).</summary>
    public const int MaxSequenceLength = 128;

    /// <summary>Writes a random tiny Llama with a byte-level tokenizer into <paramref name="directory"/>.</summary>
    public static string WriteTiny(string directory, long seed, Action<string> progress)
    {
        int vocab = ByteLevelTokenizerWriter.Write(directory);
        // transformers' default std of 0.02 caps a 64-wide model's logits near +-1.3 behind the final RMSNorm (|w| |h| =
        // 0.02 * 8 * 8), so no adapter could make any character likely; a wider init lets the adapter learn and memorise.
        TinyLlamaFactory.Write(directory, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed, initStd: TinyInitStd);
        progress($"wrote a random tiny Llama (2 layers, hidden 64, byte-level tokenizer) to {directory}");
        return directory;
    }

    public static LlamaConfig LoadConfig(string model)
    {
        try
        {
            return LlamaConfig.Load(model);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or InvalidOperationException or System.Text.Json.JsonException)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
    }

    public static HuggingFaceTokenizer LoadTokenizer(string model, LlamaConfig config)
    {
        HuggingFaceTokenizer tokenizer;
        try
        {
            tokenizer = HuggingFaceTokenizer.Load(model);
        }
        catch (TokenizerLoadException ex)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
        if (tokenizer.VocabSize > config.VocabSize)
        {
            tokenizer.Dispose();
            throw new UsageException($"--model: the tokenizer has {tokenizer.VocabSize} ids but config.json's vocab_size is {config.VocabSize}");
        }
        return tokenizer;
    }

    /// <summary>A client's lines as token batches (training batches shuffled with a fresh seed, held-out ones in order).</summary>
    /// <summary>The client's training records, one example each, for DP-SGD (record or both).</summary>
    public static RecordLevelData Records(IReadOnlyList<string> lines, string source, ITextTokenizer tokenizer, DatasetOptions datasetOptions) =>
        new(JsonlDataset.Parse(lines, source, tokenizer, datasetOptions).Examples, tokenizer.PadId);

    public static IReadOnlyList<TokenBatch> Batches(IReadOnlyList<string> lines, string source, ITextTokenizer tokenizer, DatasetOptions datasetOptions, bool shuffle)
    {
        JsonlDataset dataset;
        try
        {
            dataset = JsonlDataset.Parse(lines, source, tokenizer, datasetOptions);
        }
        catch (InvalidDataException ex)
        {
            throw new UsageException($"--data: {ex.Message}");
        }
        if (dataset.Examples.Count == 0)
        {
            throw new UsageException($"--data: {source} has no usable example");
        }
        return TokenBatcher.Batches(dataset.Examples, BatchSize, tokenizer.PadId, shuffleSeed: shuffle ? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)) : null);
    }
}
