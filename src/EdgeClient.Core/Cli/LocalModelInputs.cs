using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Precision;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using TorchSharp;

namespace Federated.EdgeClient.Cli;

/// <summary>Opens what the local train, eval and generate commands read, turning every user-fixable problem into a UsageException.</summary>
/// <remarks>Checks run cheapest first (paths, config.json, tokenizer, data) so a bad flag fails before any weights load.</remarks>
internal static class LocalModelInputs
{
    /// <summary>Reads and validates config.json of a model folder of a supported family.</summary>
    public static LlamaConfig RequireConfig(string modelDirectory)
    {
        if (!Directory.Exists(modelDirectory))
        {
            throw new UsageException($"--model: folder not found: {modelDirectory}");
        }
        try
        {
            return LlamaConfig.Load(modelDirectory);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or InvalidOperationException
            or JsonException or FormatException)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
    }

    /// <summary>Loads the folder's tokenizer.json and checks its ids fit the model's embedding.</summary>
    public static HuggingFaceTokenizer RequireTokenizer(string modelDirectory, LlamaConfig config)
    {
        HuggingFaceTokenizer tokenizer;
        try
        {
            tokenizer = HuggingFaceTokenizer.Load(modelDirectory);
        }
        catch (TokenizerLoadException ex)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
        if (tokenizer.VocabSize > config.VocabSize)
        {
            tokenizer.Dispose();
            throw new UsageException(
                $"--model: the tokenizer has {tokenizer.VocabSize} ids but config.json's vocab_size is {config.VocabSize}");
        }
        return tokenizer;
    }

    /// <summary>
    /// The --data file of `train` or `eval` tokenized with the --model folder's tokenizer under the shared flags
    /// (--max-length, --pack, --skip-malformed); each skipped line is reported on stderr. Returns the pad id with it.
    /// </summary>
    public static (JsonlDataset Dataset, int PadId) RequireDataset(LocalDataSettings settings, LlamaConfig config, int maxLength, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        using HuggingFaceTokenizer tokenizer = RequireTokenizer(settings.Model!, config);
        var options = new DatasetOptions
        {
            MaxLength = maxLength,
            Pack = settings.Pack,
            MalformedLines = settings.SkipMalformed ? MalformedLinePolicy.Skip : MalformedLinePolicy.Stop,
        };
        JsonlDataset dataset = RequireData(settings.Data!, tokenizer, options, cancellationToken);
        foreach (MalformedLine skipped in dataset.SkippedLines)
        {
            Console.Error.WriteLine($"edge-client: skipped {skipped}");
        }
        return (dataset, tokenizer.PadId);
    }

    /// <summary>Reads a JSONL file; a malformed line (under the stop policy) or an empty result is a usage error.</summary>
    public static JsonlDataset RequireData(string path, ITextTokenizer tokenizer, DatasetOptions options,
        CancellationToken cancellationToken)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"--data: file not found: {path}");
        }
        JsonlDataset dataset;
        try
        {
            dataset = JsonlDataset.Load(path, tokenizer, options, cancellationToken);
        }
        catch (DatasetFormatException ex)
        {
            throw new UsageException($"--data: {ex.Message}");
        }
        if (dataset.Examples.Count == 0)
        {
            throw new UsageException($"--data: {path} holds no usable example");
        }
        return dataset;
    }

    /// <summary>Resolves auto|cpu|cuda; asking for CUDA on a machine without it is a usage error.</summary>
    public static torch.Device RequireDevice(string choice)
    {
        try
        {
            return TrainingDevice.Resolve(choice);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException($"--device: {ex.Message.ReplaceLineEndings(" ")}");
        }
    }

    /// <summary>Loads the weights; a missing or mis-shaped tensor file is a usage error naming it.</summary>
    public static LlamaForCausalLM RequireModel(string modelDirectory, torch.Device device) =>
        RequireModel(modelDirectory, device, ModelLoadOptions.Float32);

    /// <summary>
    /// Loads the weights as the options say; a precision or quantization the device cannot run names its flag, and a model
    /// that will not fit says the estimated memory and the flags that would make it fit, before any weight is read.
    /// </summary>
    public static LlamaForCausalLM RequireModel(string modelDirectory, torch.Device device, ModelLoadOptions options)
    {
        try
        {
            return LlamaForCausalLM.FromPretrained(modelDirectory, device, options);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ModelMemoryException)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
        catch (UnsupportedPrecisionException ex)
        {
            throw new UsageException($"--{ex.Option}: {ex.Message}");
        }
    }

    /// <summary>Attaches a PEFT adapter folder; an unreadable or mismatched adapter is a usage error.</summary>
    public static void RequireAdapter(LlamaForCausalLM model, string adapterDirectory)
    {
        try
        {
            PeftAdapter.Apply(adapterDirectory, model);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or JsonException)
        {
            throw new UsageException($"--adapter: {ex.Message}");
        }
    }

    /// <summary>Sequence length to use: the requested one (within the model's positions) or min(512, positions).</summary>
    public static int SequenceLength(int? requested, LlamaConfig config)
    {
        int positions = config.MaxPositionEmbeddings;
        if (requested is int length)
        {
            if (length < 2 || length > positions)
            {
                throw new UsageException($"--max-length: {length} is outside 2..{positions} (max_position_embeddings)");
            }
            return length;
        }
        return Math.Max(2, Math.Min(512, positions));
    }
}

/// <summary>Reports progress on the caller's thread; Progress&lt;T&gt; would post to the thread pool and reorder steps.</summary>
internal sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
