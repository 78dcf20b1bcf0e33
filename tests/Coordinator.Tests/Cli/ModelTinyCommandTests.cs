using System.Text.Json;
using Federated.Coordinator.Cli;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using TorchSharp;

namespace Federated.Coordinator.Tests.Cli;

/// <summary>`coordinator model tiny`: a model to follow the walk-through with, written by a command instead of C#.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class ModelTinyCommandTests
{
    private static Task<(int Code, string Out, string Err)> RunAsync(params string[] args) => CoordinatorCli.RunCapturedAsync(args);

    [Fact]
    public async Task Tiny_LayersAndHidden_WritesAModelAndTokenizerThatLoadAndPredict()
    {
        using var dir = new TempDirectory();
        string model = dir.File("tiny");

        var (code, output, error) = await RunAsync("model", "tiny", "--out", model, "--layers", "1", "--hidden", "32", "--seed", "5", "--json");

        Assert.True(code == 0, error);
        using JsonDocument json = JsonDocument.Parse(output);
        Assert.Equal(model, json.RootElement.GetProperty("model").GetString());
        using var llama = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        Assert.Equal((1, 32), (llama.Config.NumHiddenLayers, llama.Config.HiddenSize));
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(model);
        Assert.Equal(llama.Config.VocabSize, json.RootElement.GetProperty("vocab_size").GetInt32());
        int[] ids = tokenizer.Encode("the cat sat");
        using var input = torch.tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0);
        using var logits = llama.forward(input);
        Assert.Equal(new long[] { 1, ids.Length, llama.Config.VocabSize }, logits.shape);
        Assert.True(logits.isfinite().all().item<bool>());
    }

    [Theory]
    [InlineData("--hidden", "30", "--hidden must be a multiple of 8")]
    [InlineData("--layers", "0", "--layers must be in 1..32")]
    public async Task Tiny_BadSize_ExitsTwoNamingTheFlag(string flag, string value, string expected)
    {
        using var dir = new TempDirectory();

        var (code, _, error) = await RunAsync("model", "tiny", "--out", dir.File("bad"), flag, value);

        Assert.Equal(2, code);
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.False(Directory.Exists(dir.File("bad")));
    }

    [Fact]
    public async Task Tiny_FolderNotEmpty_ExitsTwoAndLeavesItAlone()
    {
        using var dir = new TempDirectory();
        string folder = dir.File("taken");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "notes.txt"), "mine");

        var (code, _, error) = await RunAsync("model", "tiny", "--out", folder);

        Assert.Equal(2, code);
        Assert.Contains("--out", error, StringComparison.Ordinal);
        Assert.Equal(["notes.txt"], Directory.GetFiles(folder).Select(Path.GetFileName));
    }
}
