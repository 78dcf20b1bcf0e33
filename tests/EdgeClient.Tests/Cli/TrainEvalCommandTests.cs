using System.Globalization;
using System.Text.Json;
using Federated.Training.Peft;
using Federated.Training.Tokenization;
using Xunit.Abstractions;

namespace Federated.EdgeClient.Tests.Cli;

[Collection(LocalTrainingCollection.Name)]
public sealed class TrainEvalCommandTests(ITestOutputHelper output)
{
    private const int BadUsage = 2;

    private static readonly string[] s_trainingLines =
    [
        """{"text": "the cat sat on the mat"}""",
        """{"prompt": "Q: capital of France?", "completion": " A: Paris"}""",
        """{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}""",
        """{"text": "federated learning keeps data at home"}""",
    ];

    [Fact]
    public void Train_MissingModelFolder_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder(writeModel: false);
        string data = folder.WriteLines("train.jsonl", s_trainingLines);

        var result = EdgeClientProcess.Run("train", "--model", folder.File("absent"), "--data", data, "--out", folder.File("out"));

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("--model: folder not found", result.StdErr);
        Assert.Single(result.StdErr.Trim().Split('\n'));
    }

    [Fact]
    public void Train_MissingDataFile_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder();

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", folder.File("absent.jsonl"), "--out", folder.File("out"));

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("--data: file not found", result.StdErr);
        Assert.False(Directory.Exists(folder.File("out")));
    }

    [Fact]
    public void Train_NonLlamaConfig_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_trainingLines);
        System.IO.File.WriteAllText(Path.Combine(folder.Model, "config.json"),
            """{"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 64}""");

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", folder.File("out"));

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("bert", result.StdErr);
    }

    [Fact]
    public void Eval_UnreadableTokenizer_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("eval.jsonl", s_trainingLines);
        System.IO.File.WriteAllText(Path.Combine(folder.Model, "tokenizer.json"), "{ this is not a tokenizer");

        var result = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("tokenizer.json", result.StdErr);
        Assert.Contains("not valid JSON", result.StdErr);
    }

    [Fact]
    public void Eval_TokenizerLargerThanModelVocab_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("eval.jsonl", s_trainingLines);
        // 40 merges give the tokenizer more ids than the model's embedding has rows.
        ByteLevelTokenizerWriter.Write(folder.Model, ["aa bb aa bb cc dd cc dd ab ab cd cd"], mergeCount: 40);

        var result = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("vocab_size is 259", result.StdErr);
    }

    [Fact]
    public void Eval_MissingWeights_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("eval.jsonl", s_trainingLines);
        System.IO.File.Delete(Path.Combine(folder.Model, "model.safetensors"));

        var result = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data, "--device", "cpu");

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.StartsWith("edge-client: --model: ", result.StdErr);
    }

    [Fact]
    public void Eval_MissingAdapterFolder_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("eval.jsonl", s_trainingLines);

        var result = EdgeClientProcess.Run("eval", "--model", folder.Model, "--adapter", folder.File("no-adapter"), "--data", data);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("--adapter: folder not found", result.StdErr);
    }

    [Fact]
    public void Eval_MalformedLine_ExitsWithUsageErrorNamingFileAndLine()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("eval.jsonl", s_trainingLines[0], "{\"text\": ", s_trainingLines[1]);

        var result = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape(data)}:2:\d+: not valid JSON", result.StdErr);
        Assert.DoesNotContain("BytePositionInLine", result.StdErr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--steps", "0")]
    [InlineData("--rank", "0")]
    [InlineData("--device", "tpu")]
    [InlineData("--targets", "q_proj,lm_head")]
    [InlineData("--precision", "fp8")]
    [InlineData("--quantize", "q3")]
    public void Train_OutOfRangeOption_ExitsWithUsageError(string option, string value)
    {
        using var folder = new TinyModelFolder(writeModel: false);

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", "x.jsonl", "--out", folder.File("out"), option, value);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains(option, result.StdErr);
    }

    [Fact]
    public void TrainThenEval_TinyModel_AdapterLowersTheLossOnTheTrainingFile()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_trainingLines);
        string adapter = folder.File("adapter");

        var train = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", adapter,
            "--steps", "30", "--rank", "4", "--learning-rate", "0.02", "--device", "cpu", "--max-length", "64", "--json");
        var baseEval = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data, "--device", "cpu", "--json");
        var adapterEval = EdgeClientProcess.Run("eval", "--model", folder.Model, "--adapter", adapter, "--data", data,
            "--device", "cpu", "--json");

        Assert.True(train.ExitCode == 0, train.StdErr);
        string[] lines = train.StdOut.Trim().Split('\n');
        Assert.Equal(31, lines.Length);
        using (var last = JsonDocument.Parse(lines[^1]))
        {
            Assert.Equal("done", last.RootElement.GetProperty("event").GetString());
            Assert.Equal(30, last.RootElement.GetProperty("steps").GetInt32());
        }
        Assert.True(System.IO.File.Exists(Path.Combine(adapter, PeftAdapter.ConfigFileName)));
        Assert.True(System.IO.File.Exists(Path.Combine(adapter, PeftAdapter.WeightsFileName)));

        Assert.True(baseEval.ExitCode == 0, baseEval.StdErr);
        Assert.True(adapterEval.ExitCode == 0, adapterEval.StdErr);
        using var before = JsonDocument.Parse(baseEval.StdOut);
        using var after = JsonDocument.Parse(adapterEval.StdOut);
        double baseLoss = before.RootElement.GetProperty("mean_loss").GetDouble();
        double adapterLoss = after.RootElement.GetProperty("mean_loss").GetDouble();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"base mean_loss {baseLoss:F4}, adapter mean_loss {adapterLoss:F4}"));
        Assert.Equal(before.RootElement.GetProperty("tokens").GetInt64(), after.RootElement.GetProperty("tokens").GetInt64());
        // With a frozen random lm_head (std 0.02) and RMSNorm'd hidden states, logits can move only about one nat on this
        // tiny model, so the reachable drop from ln(259) is roughly 0.5 to 1; a quarter nat is far above run-to-run noise.
        Assert.True(adapterLoss < baseLoss - 0.25,
            string.Create(CultureInfo.InvariantCulture, $"adapter loss {adapterLoss} should be well below base loss {baseLoss}"));
        Assert.Equal(Math.Exp(adapterLoss), after.RootElement.GetProperty("perplexity").GetDouble(), 6);
    }

    [Fact]
    public void Train_BothCheckpointFlags_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder(writeModel: false);

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", "x.jsonl", "--out", folder.File("out"),
            "--checkpoint-activations", "--no-checkpoint-activations");

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("--checkpoint-activations and --no-checkpoint-activations", result.StdErr);
    }

    [Fact]
    public void TrainNf4Checkpointed_ThenEvalInt8_TinyModel_AdapterWrittenAndLossFalls()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_trainingLines);
        string adapter = folder.File("adapter");

        var train = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", adapter, "--steps", "30",
            "--rank", "4", "--learning-rate", "0.02", "--device", "cpu", "--max-length", "64", "--quantize", "nf4",
            "--checkpoint-activations", "--json");
        var baseEval = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data, "--device", "cpu", "--json",
            "--quantize", "int8", "--precision", "fp32");
        var adapterEval = EdgeClientProcess.Run("eval", "--model", folder.Model, "--adapter", adapter, "--data", data,
            "--device", "cpu", "--json", "--quantize", "int8", "--precision", "fp32");

        Assert.True(train.ExitCode == 0, train.StdErr);
        Assert.True(System.IO.File.Exists(Path.Combine(adapter, PeftAdapter.WeightsFileName)));
        Assert.True(baseEval.ExitCode == 0, baseEval.StdErr);
        Assert.True(adapterEval.ExitCode == 0, adapterEval.StdErr);
        using var before = JsonDocument.Parse(baseEval.StdOut);
        using var after = JsonDocument.Parse(adapterEval.StdOut);
        // Quantized bases move the logits little on this tiny model; the adapter trained over NF4 still lowers the loss.
        Assert.True(after.RootElement.GetProperty("mean_loss").GetDouble() < before.RootElement.GetProperty("mean_loss").GetDouble() - 0.1,
            $"{before.RootElement} -> {after.RootElement}");
    }

    [Fact]
    public void Train_Fp16_RunsOnlyWhereTheCpuHasNativeFp16Matmul()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_trainingLines);

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", folder.File("adapter"),
            "--steps", "2", "--device", "cpu", "--max-length", "64", "--precision", "fp16");

        if (Federated.Training.Precision.DeviceCapabilities.Detect(TorchSharp.torch.CPU).NativeFp16Matmul)
        {
            Assert.True(result.ExitCode == 0, result.StdErr);
        }
        else
        {
            Assert.Equal(BadUsage, result.ExitCode);
            Assert.StartsWith("edge-client: --precision: fp16 needs native fp16 matmul", result.StdErr);
            Assert.False(Directory.Exists(folder.File("adapter")));
        }
    }

    [Fact]
    public void Eval_PlainOutput_PrintsTheThreeNamedFigures()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("eval.jsonl", s_trainingLines);

        var result = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data, "--device", "cpu");

        Assert.True(result.ExitCode == 0, result.StdErr);
        Assert.Matches(@"(?m)^mean_loss\s+\d+\.\d+$", result.StdOut);
        Assert.Matches(@"(?m)^perplexity\s+\d+\.\d+$", result.StdOut);
        Assert.Matches(@"(?m)^tokens\s+\d+$", result.StdOut);
    }

    [Fact]
    public void Train_WithoutJson_ShowsProgressAndWritesTheAdapter()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_trainingLines);
        string adapter = folder.File("adapter");

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", adapter,
            "--steps", "3", "--rank", "2", "--device", "cpu", "--max-length", "32");

        Assert.True(result.ExitCode == 0, result.StdErr);
        Assert.Contains("trained 3 steps on 4 examples", result.StdOut);
        Assert.Contains($"adapter written to {adapter}", result.StdOut);
        Assert.True(System.IO.File.Exists(Path.Combine(adapter, PeftAdapter.WeightsFileName)));
    }
}
