using System.Text.Json;
using Federated.Training.Data;
using Federated.Training.Generation;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Tokenization;
using TorchSharp;

namespace Federated.EdgeClient.Tests.Cli;

[Collection(LocalTrainingCollection.Name)]
public sealed class GenerateCommandTests
{
    private const int BadUsage = 2;
    private const string Prompt = "the cat sat on";

    [Fact]
    public void Generate_GreedyJson_EqualsTheLibrarysGreedyTokens()
    {
        using var folder = new TinyModelFolder();

        var result = EdgeClientProcess.Run("generate", "--model", folder.Model, "--prompt", Prompt, "--max-new-tokens", "6",
            "--device", "cpu", "--json");

        Assert.True(result.ExitCode == 0, result.StdErr);
        using var json = JsonDocument.Parse(result.StdOut);
        var expected = InProcess(folder.Model, null, tokenizer => [ByteLevelTokenizerWriter.BosId, .. tokenizer.Encode(Prompt)]);
        Assert.Equal(expected.GeneratedIds, TokenIds(json));
        Assert.Equal(expected.PromptIds.Count, json.RootElement.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.GeneratedIds.Count, json.RootElement.GetProperty("generated_tokens").GetInt32());
        Assert.Equal(expected.Stop == GenerationStop.EndOfSequence ? "eos" : "max_new_tokens", json.RootElement.GetProperty("stop").GetString());
    }

    [Fact]
    public void Generate_SampledWithSeed_IsReproducibleAndTheSeedMatters()
    {
        using var folder = new TinyModelFolder();
        string[] args = ["generate", "--model", folder.Model, "--prompt", Prompt, "--max-new-tokens", "8", "--temperature", "1.0", "--device", "cpu", "--json"];

        var first = EdgeClientProcess.Run([.. args, "--seed", "41"]);
        var second = EdgeClientProcess.Run([.. args, "--seed", "41"]);
        var other = EdgeClientProcess.Run([.. args, "--seed", "42"]);

        Assert.True(first.ExitCode == 0, first.StdErr);
        using var a = JsonDocument.Parse(first.StdOut);
        using var b = JsonDocument.Parse(second.StdOut);
        using var c = JsonDocument.Parse(other.StdOut);
        Assert.Equal(TokenIds(a), TokenIds(b));
        Assert.Equal(a.RootElement.GetProperty("text").GetString(), b.RootElement.GetProperty("text").GetString());
        Assert.Equal(41, a.RootElement.GetProperty("seed").GetInt64());
        Assert.NotEqual(TokenIds(a), TokenIds(c));
    }

    [Fact]
    public void Generate_WithAdapter_EqualsTheLibraryWithThatAdapter()
    {
        using var folder = new TinyModelFolder();
        string adapter = folder.File("adapter");
        using (var model = LlamaForCausalLM.FromPretrained(folder.Model, torch.CPU))
        {
            model.AddLora(new LoraSettings(Rank: 4, Alpha: 64, TargetModules: LoraSettings.AllProjections, InitSeed: 5));
            AdapterTensors initial = model.GetAdapter();
            AdapterTensors b = initial.OnlyB();
            using (var generator = new torch.Generator(6))
            using (var values = torch.randn([b.ElementCount], generator: generator))
            {
                AdapterTensors randomB = b.Unflatten(values.data<float>().ToArray());
                model.SetAdapter(new AdapterTensors(initial.Tensors.Where(t => !randomB.Contains(t.Name)).Concat(randomB.Tensors)));
            }
            PeftAdapter.Save(adapter, model, "tiny");
        }

        var withAdapter = EdgeClientProcess.Run("generate", "--model", folder.Model, "--adapter", adapter, "--prompt", Prompt,
            "--max-new-tokens", "6", "--device", "cpu", "--json");
        var plain = EdgeClientProcess.Run("generate", "--model", folder.Model, "--prompt", Prompt, "--max-new-tokens", "6", "--device", "cpu", "--json");

        Assert.True(withAdapter.ExitCode == 0, withAdapter.StdErr);
        using var json = JsonDocument.Parse(withAdapter.StdOut);
        using var plainJson = JsonDocument.Parse(plain.StdOut);
        var expected = InProcess(folder.Model, adapter, tokenizer => [ByteLevelTokenizerWriter.BosId, .. tokenizer.Encode(Prompt)]);
        Assert.Equal(expected.GeneratedIds, TokenIds(json));
        Assert.NotEqual(TokenIds(plainJson), TokenIds(json));
    }

    [Fact]
    public void Generate_ChatAndMessages_UseTheTrainingChatLayout()
    {
        using var folder = new TinyModelFolder();
        string messages = folder.WriteLines("chat.json",
            """{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}""");
        string single = folder.WriteLines("single.json", """[{"role": "user", "content": "hi"}]""");

        var fromFile = EdgeClientProcess.Run("generate", "--model", folder.Model, "--messages", messages, "--max-new-tokens", "5", "--device", "cpu", "--json");
        var chat = EdgeClientProcess.Run("generate", "--model", folder.Model, "--prompt", "hi", "--chat", "--max-new-tokens", "5", "--device", "cpu", "--json");
        var singleFile = EdgeClientProcess.Run("generate", "--model", folder.Model, "--messages", single, "--max-new-tokens", "5", "--device", "cpu", "--json");

        Assert.True(fromFile.ExitCode == 0, fromFile.StdErr);
        using var fileJson = JsonDocument.Parse(fromFile.StdOut);
        var expected = InProcess(folder.Model, null, tokenizer => ChatTemplate.GenerationPrompt(
            [new ChatMessage("system", "be brief"), new ChatMessage("user", "hi")], tokenizer), maxNewTokens: 5);
        Assert.Equal(expected.PromptIds.Count, fileJson.RootElement.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(expected.GeneratedIds, TokenIds(fileJson));
        Assert.True(chat.ExitCode == 0, chat.StdErr);
        using var chatJson = JsonDocument.Parse(chat.StdOut);
        using var singleJson = JsonDocument.Parse(singleFile.StdOut);
        Assert.Equal(TokenIds(singleJson), TokenIds(chatJson));
        Assert.Equal(singleJson.RootElement.GetProperty("prompt_tokens").GetInt32(), chatJson.RootElement.GetProperty("prompt_tokens").GetInt32());
    }

    [Fact]
    public void Generate_PlainOutput_PrintsTheGeneratedText()
    {
        using var folder = new TinyModelFolder();

        var text = EdgeClientProcess.Run("generate", "--model", folder.Model, "--prompt", Prompt, "--max-new-tokens", "6", "--device", "cpu");
        var json = EdgeClientProcess.Run("generate", "--model", folder.Model, "--prompt", Prompt, "--max-new-tokens", "6", "--device", "cpu", "--json");

        Assert.True(text.ExitCode == 0, text.StdErr);
        using var document = JsonDocument.Parse(json.StdOut);
        Assert.Equal(document.RootElement.GetProperty("text").GetString() + Environment.NewLine, text.StdOut);
    }

    [Theory]
    [InlineData(new[] { "--prompt", "a", "--messages", "m.json" }, "exactly one of --prompt and --messages")]
    [InlineData(new[] { "--max-new-tokens", "6" }, "exactly one of --prompt and --messages")]
    [InlineData(new[] { "--prompt", "a", "--temperature", "-1" }, "--temperature")]
    [InlineData(new[] { "--prompt", "a", "--max-new-tokens", "0" }, "--max-new-tokens 0")]
    [InlineData(new[] { "--prompt", "a", "--device", "tpu" }, "--device")]
    [InlineData(new[] { "--messages", "absent.json" }, "--messages: file not found")]
    [InlineData(new[] { "--prompt", "a", "--adapter", "absent" }, "--adapter: folder not found")]
    public void Generate_BadUsage_ExitsWithOneLineNamingTheFlag(string[] flags, string expected)
    {
        using var folder = new TinyModelFolder();

        var result = EdgeClientProcess.Run(["generate", "--model", folder.Model, .. flags.Select(f => f.EndsWith(".json", StringComparison.Ordinal) || f == "absent" ? folder.File(f) : f)]);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains(expected, result.StdErr);
        Assert.Single(result.StdErr.Trim().Split('\n'));
    }

    [Fact]
    public void Generate_Help_SaysTheChatLayout()
    {
        var result = EdgeClientProcess.Run("generate", "--help");

        Assert.True(result.ExitCode == 0, result.StdErr);
        Assert.Contains("<|role|>\\n content EOS", result.StdOut);
        Assert.Contains("[{\"role\":", result.StdOut);
    }

    [Fact]
    public void Generate_MessagesWithUnknownRole_ExitsNamingTheEntry()
    {
        using var folder = new TinyModelFolder();
        string messages = folder.WriteLines("bad.json", """[{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]""");

        var result = EdgeClientProcess.Run("generate", "--model", folder.Model, "--messages", messages);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("messages[1].role 'tool'", result.StdErr);
    }

    private static GenerationResult InProcess(string modelDirectory, string? adapter, Func<ITextTokenizer, int[]> prompt, int maxNewTokens = 6)
    {
        using var tokenizer = HuggingFaceTokenizer.Load(modelDirectory);
        using var model = LlamaForCausalLM.FromPretrained(modelDirectory, torch.CPU);
        if (adapter is not null)
        {
            PeftAdapter.Apply(adapter, model);
        }
        return TextGenerator.Generate(model, prompt(tokenizer), new GenerationOptions { MaxNewTokens = maxNewTokens, StopIds = [tokenizer.EosId] });
    }

    private static int[] TokenIds(JsonDocument json) =>
        json.RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
}
