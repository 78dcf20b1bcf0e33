using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Generation;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>Continues a prompt with a model, with or without a PEFT adapter, so a holder can see what an adapter does.</summary>
internal sealed class GenerateCommand : Command<GenerateCommand.Settings>
{
    private const long MaxMessagesFileBytes = 16 << 20;

    public sealed class Settings : CommandSettings
    {
        [CommandOption("--model <DIR>")]
        [Description("Hugging Face model folder: config.json, model.safetensors (or sharded), tokenizer.json.")]
        public string? Model { get; init; }

        [CommandOption("--adapter <DIR>")]
        [Description("PEFT adapter folder to generate with; the base model alone when omitted.")]
        public string? Adapter { get; init; }

        [CommandOption("--prompt <TEXT>")]
        [Description("Text to continue: BOS (where the tokenizer has one) then the text, or with --chat one user turn.")]
        public string? Prompt { get; init; }

        [CommandOption("--chat")]
        [Description("Treat --prompt as a user message in the chat layout train uses for messages records: BOS, then per turn "
            + "<|role|>\\n content EOS \\n, then <|assistant|>\\n; the reply ends at EOS.")]
        public bool Chat { get; init; }

        [CommandOption("--messages <FILE>")]
        // Spectre.Console reads [ and ] as markup; doubled they print as themselves.
        [Description("JSON file with a conversation, [[{\"role\": \"system|user|assistant\", \"content\": \"...\"}, ...]] or "
            + "{\"messages\": [[...]]}, laid out as --chat says and followed by <|assistant|>\\n.")]
        public string? Messages { get; init; }

        [CommandOption("--max-new-tokens <N>")]
        [Description("Tokens to generate at most; generation stops earlier at EOS (default: 128).")]
        public int MaxNewTokens { get; init; } = 128;

        [CommandOption("--temperature <T>")]
        [Description("Sampling temperature: 0 is greedy; above 0, sample from softmax(logits / T) (default: 0).")]
        public double Temperature { get; init; }

        [CommandOption("--seed <S>")]
        [Description("Seed of the sampler: the same seed, prompt, model and adapter give the same text (default: random, printed with --json).")]
        public long? Seed { get; init; }

        [CommandOption("--device <D>")]
        [Description("auto, cpu or cuda (default: auto, CUDA when available).")]
        public string Device { get; init; } = "auto";

        [CommandOption("--json")]
        [Description("Print one JSON object (text, token ids, counts, stop reason, seed) instead of the text.")]
        public bool Json { get; init; }

        public override ValidationResult Validate()
        {
            if (string.IsNullOrWhiteSpace(Model))
            {
                return ValidationResult.Error("--model is required");
            }
            if ((Prompt is null) == (Messages is null))
            {
                return ValidationResult.Error("give exactly one of --prompt and --messages");
            }
            if (Chat && Messages is not null)
            {
                return ValidationResult.Error("--chat goes with --prompt; --messages is always laid out as a chat");
            }
            if (MaxNewTokens is < 1 or > GenerationOptions.MaxSupportedNewTokens)
            {
                return ValidationResult.Error($"--max-new-tokens {MaxNewTokens} is outside 1..{GenerationOptions.MaxSupportedNewTokens}");
            }
            if (!(Temperature >= 0 && Temperature <= GenerationOptions.MaxTemperature))
            {
                return ValidationResult.Error(string.Create(CultureInfo.InvariantCulture,
                    $"--temperature {Temperature} is outside 0..{GenerationOptions.MaxTemperature}"));
            }
            if (!TrainingDevice.Choices.Contains(Device.ToLowerInvariant()))
            {
                return ValidationResult.Error($"--device '{Device}' is not one of {string.Join(", ", TrainingDevice.Choices)}");
            }
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string modelDirectory = settings.Model!;
        LlamaConfig config = LocalModelInputs.RequireConfig(modelDirectory);
        if (settings.Adapter is string adapterDirectory && !Directory.Exists(adapterDirectory))
        {
            throw new UsageException($"--adapter: folder not found: {adapterDirectory}");
        }
        using HuggingFaceTokenizer tokenizer = LocalModelInputs.RequireTokenizer(modelDirectory, config);
        int[] promptIds = PromptIds(settings, tokenizer);
        if (promptIds.Length == 0)
        {
            throw new UsageException("--prompt: the prompt encodes to no tokens");
        }
        if (promptIds.Length >= config.MaxPositionEmbeddings)
        {
            throw new UsageException(
                $"--prompt: {promptIds.Length} tokens leave no room in the model's context of {config.MaxPositionEmbeddings} (max_position_embeddings)");
        }
        IReadOnlyList<int> stopIds;
        try
        {
            stopIds = StopTokens.Read(modelDirectory, tokenizer, config.VocabSize);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException)
        {
            throw new UsageException($"--model: {ex.Message}");
        }

        var device = LocalModelInputs.RequireDevice(settings.Device);
        using LlamaForCausalLM model = LocalModelInputs.RequireModel(modelDirectory, device);
        if (settings.Adapter is not null)
        {
            LocalModelInputs.RequireAdapter(model, settings.Adapter);
        }
        long seed = settings.Seed ?? RandomSeed();
        var options = new GenerationOptions
        {
            MaxNewTokens = settings.MaxNewTokens,
            Temperature = settings.Temperature,
            Seed = seed,
            StopIds = stopIds,
        };
        cancellationToken.ThrowIfCancellationRequested();
        var clock = Stopwatch.StartNew();
        GenerationResult result = TextGenerator.Generate(model, promptIds, options);
        double seconds = clock.Elapsed.TotalSeconds;
        string text = tokenizer.Decode([.. result.GeneratedIds]);

        if (settings.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                text,
                token_ids = result.GeneratedIds,
                prompt_tokens = result.PromptIds.Count,
                generated_tokens = result.GeneratedIds.Count,
                stop = StopName(result.Stop),
                temperature = settings.Temperature,
                seed,
                device = device.type.ToString().ToLowerInvariant(),
                seconds = Math.Round(seconds, 3),
            }));
        }
        else
        {
            Console.WriteLine(text);
        }
        return CliRunner.Ok;
    }

    private static int[] PromptIds(Settings settings, ITextTokenizer tokenizer)
    {
        if (settings.Messages is string file)
        {
            return ChatTemplate.GenerationPrompt(ReadMessages(file), tokenizer);
        }
        if (settings.Chat)
        {
            return ChatTemplate.GenerationPrompt([new ChatMessage(ChatTemplate.User, settings.Prompt!)], tokenizer);
        }
        int[] text = tokenizer.Encode(settings.Prompt!);
        return tokenizer.BosId is int bos ? [bos, .. text] : text;
    }

    private static List<ChatMessage> ReadMessages(string path)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"--messages: file not found: {path}");
        }
        if (new FileInfo(path).Length > MaxMessagesFileBytes)
        {
            throw new UsageException($"--messages: {path} is larger than {MaxMessagesFileBytes >> 20} MiB");
        }
        try
        {
            using JsonDocument document = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { MaxDepth = 16 });
            JsonElement root = document.RootElement;
            JsonElement messages = root.ValueKind == JsonValueKind.Object && root.TryGetProperty("messages", out JsonElement inner) ? inner : root;
            return ChatTemplate.ReadMessages(messages);
        }
        catch (Exception ex) when (ex is JsonException or FormatException or IOException)
        {
            throw new UsageException($"--messages: {path}: {ex.Message}");
        }
    }

    private static string StopName(GenerationStop stop) => stop switch
    {
        GenerationStop.EndOfSequence => "eos",
        GenerationStop.MaxNewTokens => "max_new_tokens",
        _ => "context_length",
    };

    /// <summary>A fresh non-negative seed; it is printed with --json so the run can be repeated.</summary>
    private static long RandomSeed() => BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & long.MaxValue;
}
