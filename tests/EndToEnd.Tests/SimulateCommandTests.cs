using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Simulation;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Provenance;
using Federated.Training.Tokenization;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `coordinator simulate` as a user runs it: the real executable in a child process (ephemeral PKI, coordinator on
/// loopback mutual TLS, in-process edge clients, distributed DP under SecAgg+, signed export).
/// </summary>
public sealed class SimulateCommandTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] s_roundKeys = ["round", "train_loss", "eval_loss", "epsilon", "participants", "dropouts", "seconds"];
    private static readonly string[] s_allProjections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-simulate-test-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task Simulate_JsonSmallRun_RoundObjectsEvalLossFallsAdapterLoadsAndVerifies()
    {
        // The --data layout: DIR/client-K.jsonl, held out from DIR/client-K.eval.jsonl or else the file's last 20%.
        string data = Path.Combine(_root, "data");
        Directory.CreateDirectory(data);
        IReadOnlyList<ClientData> clients = SimulationData.Synthetic(SimulationData.ClientNames(3), seed: 7);
        await File.WriteAllLinesAsync(Path.Combine(data, "client-1.jsonl"), clients[0].TrainLines.Concat(clients[0].EvalLines));
        await File.WriteAllLinesAsync(Path.Combine(data, "client-2.jsonl"), clients[1].TrainLines.Concat(clients[1].EvalLines));
        await File.WriteAllLinesAsync(Path.Combine(data, "client-3.jsonl"), clients[2].TrainLines);
        await File.WriteAllLinesAsync(Path.Combine(data, "client-3.eval.jsonl"), clients[2].EvalLines);
        string outDirectory = Path.Combine(_root, "adapter");
        (int code, string stdout) = await RunAsync(["simulate", "--clients", "3", "--rounds", "2", "--json", "--seed", "7", "--data", data, "--noise-multiplier", "0.4", "--out", outDirectory]);

        Assert.Equal(0, code);
        JsonElement[] lines = [.. stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)];
        Assert.Equal(4, lines.Length);
        JsonElement[] rounds = lines[..3];
        for (int i = 0; i < rounds.Length; i++)
        {
            Assert.Equal(s_roundKeys, rounds[i].EnumerateObject().Select(p => p.Name));
            Assert.Equal(i, rounds[i].GetProperty("round").GetInt32());
        }
        // Round 0 is the baseline: no training, nothing spent.
        Assert.Equal(JsonValueKind.Null, rounds[0].GetProperty("train_loss").ValueKind);
        Assert.Equal(0, rounds[0].GetProperty("epsilon").GetDouble());
        foreach (JsonElement round in rounds[1..])
        {
            Assert.Equal(3, round.GetProperty("participants").GetInt32());
            Assert.Equal(0, round.GetProperty("dropouts").GetInt32());
            Assert.True(round.GetProperty("train_loss").GetDouble() > 0);
        }
        Assert.True(rounds[2].GetProperty("epsilon").GetDouble() > rounds[1].GetProperty("epsilon").GetDouble(), "epsilon grows with each charged round");
        double before = rounds[0].GetProperty("eval_loss").GetDouble();
        double after = rounds[2].GetProperty("eval_loss").GetDouble();
        Assert.True(after < before, $"held-out eval loss did not fall: {before:F4} -> {after:F4}");

        JsonElement summary = lines[3];
        Assert.Equal(outDirectory, summary.GetProperty("adapter_dir").GetString());
        Assert.Equal(rounds[2].GetProperty("epsilon").GetDouble(), summary.GetProperty("epsilon").GetDouble(), 9);
        Assert.Equal(0.4, summary.GetProperty("noise_multiplier").GetDouble());

        // The folder is a PEFT adapter that loads back, signed by the federation the simulation made.
        var (settings, adapter, _) = PeftAdapter.Load(outDirectory);
        Assert.Equal(["down_proj", "o_proj"], settings.Targets.Order(StringComparer.Ordinal));
        Assert.Contains(adapter.Names, n => n.EndsWith(".lora_B.weight", StringComparison.Ordinal));
        Assert.Contains(adapter.OnlyB().Flatten(), v => v != 0);
        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(summary.GetProperty("ca_certificate").GetString()!);
        using X509Certificate2 signer = AdapterSignature.Verify(outDirectory, ca);
        using JsonDocument provenance = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDirectory, "provenance.json")));
        Assert.Equal(summary.GetProperty("epsilon").GetDouble(), provenance.RootElement.GetProperty("epsilon_spent").GetDouble(), 9);
        Assert.Equal(2, provenance.RootElement.GetProperty("participants_per_round").GetArrayLength());
        Assert.Equal(64, provenance.RootElement.GetProperty("base_model_sha256").GetString()!.Length);

        // The report beside the adapter: held-out loss (round 0 the baseline), epsilon and participation, as PNGs that
        // decode and embedded in report.html with each round's numbers as the round lines printed them.
        string reportDirectory = outDirectory + ".report";
        Assert.Equal(Path.Combine(reportDirectory, "report.html"), summary.GetProperty("report").GetString());
        Assert.Equal(["epsilon.png", "loss.png", "participation.png", "report.html"],
            Directory.EnumerateFiles(reportDirectory).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (string png in new[] { "loss.png", "epsilon.png", "participation.png" })
        {
            Assert.Equal((800, 450), PngFile.Check(Path.Combine(reportDirectory, png)));
        }
        string html = await File.ReadAllTextAsync(Path.Combine(reportDirectory, "report.html"));
        Assert.Contains($"<td id=\"run-id\">{summary.GetProperty("run_id").GetString()}</td>", html, StringComparison.Ordinal);
        Assert.Equal(3, html.Split("src=\"data:image/png;base64,").Length - 1);
        foreach (JsonElement round in rounds)
        {
            string loss = round.GetProperty("eval_loss").GetDouble().ToString("F4", System.Globalization.CultureInfo.InvariantCulture);
            string epsilon = round.GetProperty("epsilon").GetDouble().ToString("G6", System.Globalization.CultureInfo.InvariantCulture);
            Assert.Contains($"<td class=\"n epsilon\">{epsilon}</td><td class=\"n loss\">{loss}</td>", html, StringComparison.Ordinal);
        }
        Assert.Contains("<td>released</td><td class=\"n\">3</td><td class=\"n\">3</td><td class=\"n\">&ndash;</td><td class=\"n\">0</td>", html, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Simulate_PrivacyUnitRecordDefaults_RecordEpsilonAtMost3EvalLossFallsNoClientLevelCharge()
    {
        string outDirectory = Path.Combine(_root, "record");
        (int code, string stdout) = await RunAsync(["simulate", "--privacy-unit", "record", "--clients", "2", "--json", "--seed", "3", "--out", outDirectory]);

        Assert.Equal(0, code);
        JsonElement[] lines = [.. stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)];
        JsonElement summary = lines[^1];
        JsonElement[] rounds = lines[..^1];
        Assert.Equal(6, rounds.Length);
        Assert.All(rounds[1..], r => Assert.Equal(2, r.GetProperty("participants").GetInt32()));
        double before = summary.GetProperty("initial_eval_loss").GetDouble();
        double after = summary.GetProperty("final_eval_loss").GetDouble();
        Assert.True(after < before, $"held-out eval loss did not fall: {before:F4} -> {after:F4}");
        Assert.Equal("record", summary.GetProperty("privacy_unit").GetString());
        // 48 records each, q = 4 / 48, z = 2, 5 rounds x 25 steps: the clients' own ledgers, priced by the accountant.
        double recordEpsilon = summary.GetProperty("record_epsilon").GetDouble();
        Assert.InRange(recordEpsilon, 0.1, 3.0);
        var accountant = new Aggregation.Privacy.RdpAccountant();
        accountant.ComposeSubsampledGaussian(Aggregation.Privacy.RecordLevelPricing.SamplingRate(4, 48), 2.0, 125);
        Assert.Equal(accountant.GetEpsilon(1e-5).Epsilon, recordEpsilon, 9);
        // No client-level noise, so no client-level charge and no claim.
        Assert.Equal(0, summary.GetProperty("epsilon").GetDouble());
        using JsonDocument provenance = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDirectory, "provenance.json")));
        Assert.Equal("record", provenance.RootElement.GetProperty("privacy_unit").GetString());
        Assert.Equal(2.0, provenance.RootElement.GetProperty("record_noise_multiplier").GetDouble());
        Assert.Equal(1.0, provenance.RootElement.GetProperty("record_max_grad_norm").GetDouble());
        Assert.Equal(5, provenance.RootElement.GetProperty("rounds_released").GetInt32());
    }

    [Fact]
    public async Task Simulate_Canaries_ExposureWithDpIsLowerThanWithout()
    {
        // The --model path: a tiny Llama made by the test.
        string model = Path.Combine(_root, "tiny");
        int vocab = ByteLevelTokenizerWriter.Write(model);
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), seed: 5, initStd: 0.1);
        string outDirectory = Path.Combine(_root, "canary-adapter");
        // Strong noise against none, with an adapter big enough to memorise: the canary is inserted 100 times into
        // client-1's data and trained for 3 rounds of 40 steps. One canary, so its first digit is not shared with another
        // canary's (which would cap how well even a memorising model can rank it). The learning rate is 0.03: at the
        // default 0.1 AdamW memorised erratically (exposures without DP of 3.8-11 bits over 12 runs, one CI failure at
        // 3.78 against 6.72 with DP); at 0.03, 14 of 14 runs (9 of 4 x 75 steps, 5 of 3 x 40) reached 10.97 bits without
        // DP (the most 2000 samples can
        // show) against 0.3-5.3 with DP.
        (int code, string stdout) = await RunAsync(["simulate", "--clients", "2", "--rounds", "3", "--json", "--seed", "3", "--model", model, "--out", outDirectory,
            "--canaries", "1", "--canary-repeats", "100", "--local-steps", "40", "--learning-rate", "0.03", "--rank", "8", "--targets", string.Join(",", s_allProjections), "--noise-multiplier", "5"]);

        Assert.Equal(0, code);
        JsonElement summary = JsonDocument.Parse(stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1]).RootElement;
        JsonElement[] canaries = [.. summary.GetProperty("canaries").EnumerateArray()];
        Assert.Single(canaries);
        double[] withDp = [.. canaries.Select(c => c.GetProperty("exposure_dp").GetDouble())];
        double[] withoutDp = [.. canaries.Select(c => c.GetProperty("exposure_no_dp").GetDouble())];
        output.WriteLine($"epsilon {summary.GetProperty("epsilon").GetDouble():F3}; exposure with DP {string.Join(", ", withDp.Select(e => e.ToString("F2")))}; without {string.Join(", ", withoutDp.Select(e => e.ToString("F2")))}");
        Assert.All(canaries, c => Assert.StartsWith("my secret code is ", c.GetProperty("canary").GetString(), StringComparison.Ordinal));
        Assert.True(withoutDp[0] > withDp[0], $"exposure without DP {withoutDp[0]:F2} is not above the exposure with DP {withDp[0]:F2}");
    }

    [Theory]
    [InlineData("--clients", "1")]
    [InlineData("--rounds", "0")]
    [InlineData("--canaries", "-1")]
    [InlineData("--data", "/nonexistent/federated-simulate-data")]
    [InlineData("--privacy-unit", "patient")]
    [InlineData("--record-noise", "0")]
    [InlineData("--batch-size", "0")]
    public async Task Simulate_BadFlag_ExitsWithUsageError(string flag, string value)
    {
        (int code, _) = await RunAsync(["simulate", flag, value, "--out", Path.Combine(_root, "never")]);

        Assert.Equal(2, code);
        Assert.False(Directory.Exists(Path.Combine(_root, "never")));
    }

    [Fact]
    public async Task Simulate_DataFolderWithoutClientFile_ExitsWithUsageError()
    {
        string data = Path.Combine(_root, "data");
        Directory.CreateDirectory(data);
        await File.WriteAllLinesAsync(Path.Combine(data, "client-1.jsonl"), ["{\"text\": \"one\"}", "{\"text\": \"two\"}"]);

        (int code, _) = await RunAsync(["simulate", "--clients", "2", "--data", data, "--out", Path.Combine(_root, "never")]);

        Assert.Equal(2, code);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
            // Nothing was written.
        }
    }

    private async Task<(int Code, string Stdout)> RunAsync(string[] args)
    {
        Directory.CreateDirectory(_root);
        // The coordinator's own build output, as `dotnet run --project src/Coordinator` uses it; libtorch threads as a user gets them.
        (int code, string stdout, string stderr) = await DotnetProcess.RunAsync(DotnetProcess.BuildOutput("Coordinator", "coordinator.dll"), args, TimeSpan.FromMinutes(8),
            new Dictionary<string, string?> { ["OMP_NUM_THREADS"] = null, ["OMP_WAIT_POLICY"] = "PASSIVE" }, workingDirectory: _root);
        output.WriteLine(stderr);
        output.WriteLine(stdout);
        return (code, stdout);
    }
}
