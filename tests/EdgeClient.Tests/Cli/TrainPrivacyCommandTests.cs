using System.Globalization;
using System.Text.Json;
using Federated.Training.Trainer;
using Xunit.Abstractions;

namespace Federated.EdgeClient.Tests.Cli;

[Collection(LocalTrainingCollection.Name)]
public sealed class TrainPrivacyCommandTests(ITestOutputHelper output)
{
    private const int BadUsage = 2;

    private static readonly string[] s_records =
    [
        """{"text": "the cat sat on the mat"}""",
        """{"text": "the cat sat on the hat"}""",
        """{"text": "federated learning keeps data at home"}""",
        """{"text": "federated learning keeps data at rest"}""",
    ];

    [Fact]
    public void Train_RecordUnit_PrintsRecordEpsilonPerStepAndLossFalls()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_records);
        string adapter = folder.File("adapter");

        var train = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", adapter,
            "--steps", "30", "--rank", "4", "--learning-rate", "0.02", "--device", "cpu", "--max-length", "64",
            "--batch-size", "2", "--privacy-unit", "record", "--noise-multiplier", "0.1", "--max-grad-norm", "1", "--delta", "1e-5",
            "--json");
        var baseEval = EdgeClientProcess.Run("eval", "--model", folder.Model, "--data", data, "--device", "cpu", "--json");
        var adapterEval = EdgeClientProcess.Run("eval", "--model", folder.Model, "--adapter", adapter, "--data", data,
            "--device", "cpu", "--json");

        Assert.True(train.ExitCode == 0, train.StdErr);
        string[] lines = train.StdOut.Trim().Split('\n');
        Assert.Equal(31, lines.Length);
        // q = 2 / 4 records, z 0.1, delta 1e-5: an independent port of Opacus rdp.py gives 1534.2632211999025 after 30 steps.
        var accountant = new RecordLevelAccountant(0.5, 0.1, 1e-5);
        for (int step = 1; step <= 30; step++)
        {
            using var line = JsonDocument.Parse(lines[step - 1]);
            Assert.Equal(step, line.RootElement.GetProperty("step").GetInt32());
            Assert.Equal(accountant.Epsilon(step), line.RootElement.GetProperty("record_epsilon").GetDouble(), 9);
        }
        using (var done = JsonDocument.Parse(lines[^1]))
        {
            JsonElement root = done.RootElement;
            Assert.Equal("done", root.GetProperty("event").GetString());
            Assert.Equal("record", root.GetProperty("privacy_unit").GetString());
            Assert.Equal("add-remove", root.GetProperty("adjacency").GetString());
            double epsilon = root.GetProperty("record_epsilon").GetDouble();
            Assert.True(Math.Abs(epsilon - 1534.2632211999025) <= 1e-9 * epsilon, $"record_epsilon {epsilon}");
            Assert.Equal(1e-5, root.GetProperty("delta").GetDouble());
            Assert.Equal(0.5, root.GetProperty("sampling_rate").GetDouble());
        }
        Assert.True(baseEval.ExitCode == 0, baseEval.StdErr);
        Assert.True(adapterEval.ExitCode == 0, adapterEval.StdErr);
        using var before = JsonDocument.Parse(baseEval.StdOut);
        using var after = JsonDocument.Parse(adapterEval.StdOut);
        double baseLoss = before.RootElement.GetProperty("mean_loss").GetDouble();
        double adapterLoss = after.RootElement.GetProperty("mean_loss").GetDouble();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"base mean_loss {baseLoss:F4}, DP-SGD adapter mean_loss {adapterLoss:F4}"));
        Assert.True(adapterLoss < baseLoss - 0.1,
            string.Create(CultureInfo.InvariantCulture, $"DP-SGD adapter loss {adapterLoss} should be below base loss {baseLoss}"));
    }

    [Fact]
    public void Train_RecordUnitHumanOutput_NamesRecordEpsilonAndDelta()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_records);

        var train = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", folder.File("adapter"),
            "--steps", "2", "--rank", "2", "--device", "cpu", "--max-length", "32", "--batch-size", "2",
            "--privacy-unit", "record", "--noise-multiplier", "1.0", "--max-grad-norm", "0.5", "--delta", "1e-5");

        Assert.True(train.ExitCode == 0, train.StdErr);
        double expected = new RecordLevelAccountant(0.5, 1.0, 1e-5).Epsilon(2);
        Assert.Contains(string.Create(CultureInfo.InvariantCulture, $"record_epsilon {expected:F4} at delta 1E-05"), train.StdOut);
    }

    [Theory]
    [InlineData("--noise-multiplier", "0", "--max-grad-norm", "1", "--delta", "1e-5", "--noise-multiplier")]
    [InlineData("--noise-multiplier", "-1", "--max-grad-norm", "1", "--delta", "1e-5", "--noise-multiplier")]
    [InlineData("--noise-multiplier", "NaN", "--max-grad-norm", "1", "--delta", "1e-5", "--noise-multiplier")]
    [InlineData("--noise-multiplier", "Infinity", "--max-grad-norm", "1", "--delta", "1e-5", "--noise-multiplier")]
    [InlineData("--noise-multiplier", "1", "--max-grad-norm", "0", "--delta", "1e-5", "--max-grad-norm")]
    [InlineData("--noise-multiplier", "1", "--max-grad-norm", "NaN", "--delta", "1e-5", "--max-grad-norm")]
    [InlineData("--noise-multiplier", "1", "--max-grad-norm", "1", "--delta", "0", "--delta")]
    [InlineData("--noise-multiplier", "1", "--max-grad-norm", "1", "--delta", "1", "--delta")]
    [InlineData("--noise-multiplier", "1", "--max-grad-norm", "1", "--delta", "-0.1", "--delta")]
    [InlineData("--noise-multiplier", "1", "--max-grad-norm", "1", "--pack", "--pack", "--pack")]
    public void Train_RecordUnitBadFlag_ExitsWithUsageErrorNamingIt(string f1, string v1, string f2, string v2, string f3, string v3, string named)
    {
        using var folder = new TinyModelFolder(writeModel: false);
        string[] tail = f3 == "--pack" ? [f1, v1, f2, v2, "--delta", "1e-5", "--pack"] : [f1, v1, f2, v2, f3, v3];

        var result = EdgeClientProcess.Run(["train", "--model", folder.Model, "--data", "x.jsonl", "--out", folder.File("out"),
            "--privacy-unit", "record", .. tail]);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains(named, result.StdErr);
        Assert.False(Directory.Exists(folder.File("out")));
    }

    [Theory]
    [InlineData("--noise-multiplier")]
    [InlineData("--max-grad-norm")]
    [InlineData("--delta")]
    public void Train_RecordUnitMissingFlag_ExitsWithUsageErrorNamingIt(string missing)
    {
        using var folder = new TinyModelFolder(writeModel: false);
        var flags = new Dictionary<string, string> { ["--noise-multiplier"] = "1", ["--max-grad-norm"] = "1", ["--delta"] = "1e-5" };
        flags.Remove(missing);

        var result = EdgeClientProcess.Run(["train", "--model", folder.Model, "--data", "x.jsonl", "--out", folder.File("out"),
            "--privacy-unit", "record", .. flags.SelectMany(f => new[] { f.Key, f.Value })]);

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains($"--privacy-unit record needs {missing}", result.StdErr);
    }

    [Fact]
    public void Train_UnknownPrivacyUnitOrStrayFlag_ExitsWithUsageError()
    {
        using var folder = new TinyModelFolder(writeModel: false);

        var unknown = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", "x.jsonl", "--out", folder.File("out"),
            "--privacy-unit", "client");
        var stray = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", "x.jsonl", "--out", folder.File("out"),
            "--noise-multiplier", "1");

        Assert.Equal(BadUsage, unknown.ExitCode);
        Assert.Contains("--privacy-unit 'client' is not one of none, record", unknown.StdErr);
        Assert.Equal(BadUsage, stray.ExitCode);
        Assert.Contains("--noise-multiplier applies only with --privacy-unit record", stray.StdErr);
    }

    [Fact]
    public void Train_RecordUnitFewerRecordsThanTheBatch_ExitsWithUsageErrorNamingBatchSize()
    {
        using var folder = new TinyModelFolder();
        string data = folder.WriteLines("train.jsonl", s_records);

        var result = EdgeClientProcess.Run("train", "--model", folder.Model, "--data", data, "--out", folder.File("out"),
            "--device", "cpu", "--batch-size", "5", "--privacy-unit", "record", "--noise-multiplier", "1", "--max-grad-norm", "1",
            "--delta", "1e-5");

        Assert.Equal(BadUsage, result.ExitCode);
        Assert.Contains("--batch-size 5", result.StdErr);
        Assert.Contains("only 4 records", result.StdErr);
        Assert.False(Directory.Exists(folder.File("out")));
    }
}
