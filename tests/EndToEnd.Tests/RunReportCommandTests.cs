using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Cli;
using Federated.Coordinator.Cli;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Wire;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `coordinator run report` in process (CliRunner: the real exit codes) against a real coordinator over mutual TLS,
/// after a real two-round run of three clients: the files it writes, that the PNGs decode, and the run's numbers in the HTML.
/// </summary>
[Collection(AdminCliCollection.Name)]
public sealed class RunReportCommandTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    [Fact]
    public async Task RunReport_FinishedRun_HtmlAndPngsHoldTheRunsNumbers()
    {
        var (code, _, error) = await AsAsync("officer", "budget", "set", "--epsilon", "50", "--delta", "1e-5", "--population", "report");
        Assert.True(code == 0, error);
        string runId;
        using (var stop = new CancellationTokenSource(TimeSpan.FromSeconds(180)))
        {
            Task[] clients = [.. s_clients.Select(name => Task.Run(() => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, coordinator.Address).RunAsync(stop.Token)))];
            try
            {
                string model = Path.Combine(coordinator.Root, "base-report");
                TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(), seed: 9);
                string output;
                (code, output, error) = await AsAsync("engineer", "run", "start", "--base-model", model, "--rank", "2", "--targets", "q_proj",
                    "--rounds", "2", "--clients-per-round", "3", "--local-steps", "1", "--learning-rate", "0.01", "--clip-norm", "1",
                    "--mechanism", "distributed", "--noise", "0.5", "--delta", "1e-6", "--population", "report", "--min-survivors", "2", "--json");
                Assert.True(code == 0, error);
                runId = JsonDocument.Parse(output).RootElement.GetProperty("run_id").GetString()!;
                (code, _, error) = await AsAsync("engineer", "run", "status", runId, "--watch", "--json");
                Assert.True(code == 0, error);
            }
            finally
            {
                await stop.CancelAsync();
                await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
            }
        }

        // Each round's epsilon as 'ledger show' prints it in its table.
        var (_, ledgerJson, _) = await AsAsync("officer", "ledger", "show", "--run", runId, "--json");
        var (_, ledgerTable, _) = await AsAsync("officer", "ledger", "show", "--run", runId);
        JsonElement[] charges = [.. JsonDocument.Parse(ledgerJson).RootElement.GetProperty("entries").EnumerateArray()];
        Assert.Equal([1u, 2u], charges.Select(c => c.GetProperty("round").GetUInt32()));
        string[] printed = [.. charges.Select(c => c.GetProperty("epsilon_after").GetDouble().ToString("G6", CultureInfo.InvariantCulture))];
        Assert.All(printed, p => Assert.Contains(p, ledgerTable, StringComparison.Ordinal));
        Assert.NotEqual(printed[0], printed[1]);

        foreach (string role in new[] { "officer", "engineer" })
        {
            string directory = Path.Combine(coordinator.Root, "report-" + role);
            (code, string printedPath, error) = await AsAsync(role, "run", "report", "--run", runId, "--out", directory);
            Assert.True(code == 0, error);
            Assert.Contains(Path.Combine(directory, "report.html"), printedPath, StringComparison.Ordinal);

            Assert.Equal(["epsilon.png", "participation.png", "report.html"], Directory.EnumerateFiles(directory).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            Assert.Equal((800, 450), PngFile.Check(Path.Combine(directory, "epsilon.png")));
            Assert.Equal((800, 450), PngFile.Check(Path.Combine(directory, "participation.png")));

            string html = await File.ReadAllTextAsync(Path.Combine(directory, "report.html"));
            Assert.StartsWith("<!DOCTYPE html>", html, StringComparison.Ordinal);
            Assert.Contains($"<td id=\"run-id\">{runId}</td>", html, StringComparison.Ordinal);
            foreach (string epsilon in printed)
            {
                Assert.Contains($"<td class=\"n epsilon\">{epsilon}</td>", html, StringComparison.Ordinal);
            }
            // Both rounds released with all three clients: selected 3, survivors 3, declined 0, dropouts 0.
            Assert.Equal(2, CountOf(html, "<td>released</td><td class=\"n\">3</td><td class=\"n\">3</td><td class=\"n\">0</td><td class=\"n\">0</td>"));
            Assert.Equal(2, CountOf(html, "src=\"data:image/png;base64,"));
            Assert.Contains("the coordinator never holds a loss", html, StringComparison.Ordinal);
            // Self-contained: nothing is fetched from anywhere; client names stay out (base64 could spell one by chance).
            string text = System.Text.RegularExpressions.Regex.Replace(html, "data:image/png;base64,[A-Za-z0-9+/=]+", "data:");
            Assert.DoesNotContain("http://", text, StringComparison.Ordinal);
            Assert.DoesNotContain("https://", text, StringComparison.Ordinal);
            Assert.All(s_clients, c => Assert.DoesNotContain(c, text, StringComparison.Ordinal));
            Assert.Contains(role == "officer" ? "Epsilon after each round: the privacy ledger" : "this identity may not read the ledger itself", html, StringComparison.Ordinal);
        }

        string again = Path.Combine(coordinator.Root, "report-officer");
        (code, string json, error) = await AsAsync("officer", "run", "report", "--run", runId, "--out", again, "--json");
        Assert.True(code == 0, error);
        JsonElement result = JsonDocument.Parse(json).RootElement;
        Assert.Equal(runId, result.GetProperty("run_id").GetString());
        Assert.Equal(["epsilon.png", "participation.png", "report.html"], result.GetProperty("files").EnumerateArray().Select(f => f.GetString()));
        Assert.Equal(charges.Select(c => c.GetProperty("epsilon_after").GetDouble()),
            result.GetProperty("rounds").EnumerateArray().Select(r => r.GetProperty("epsilon_after").GetDouble()));
    }

    [Fact]
    public async Task RunReport_DeclineDropoutAndFailedRound_CountedFromTheAuditTrail()
    {
        // A run recorded in the state store (as a restart leaves it): round 1 released with two of four selected
        // summed, one declined, one dropped; round 2 failed. No training is needed to show how the counts are read.
        string model = Path.Combine(coordinator.Root, "base-recorded-report");
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(), seed: 10);
        coordinator.Host.State.Budgets.Set("recorded-report", 20, 1e-5, "officer");
        var plan = new RunPlan
        {
            BaseModel = model, LoraRank = 2, Rounds = 2, ClientsPerRound = 4, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1, Delta = 1e-6, Population = "recorded-report",
        };
        plan.TargetModules.Add("q_proj");
        var adapter = Coordinator.Rounds.GlobalAdapter.Create(model, new Training.Lora.LoraSettings(Rank: 2, Alpha: 4, TargetModules: ["q_proj"], InitSeed: 3, FreezeA: true));
        const string runId = "run-00000000000000e1";
        string initial = coordinator.Host.Adapters.Put(adapter.Serialize(), runId, 0);
        coordinator.Host.State.Runs.Create(runId, Google.Protobuf.MessageExtensions.ToByteArray(plan), "recorded-report", 1.5, 1, initial, "engineer");
        coordinator.Host.State.Rounds.Start(runId, 1, new Dictionary<string, int> { ["gone-1"] = 1, ["gone-2"] = 2, ["gone-3"] = 3, ["gone-4"] = 4 }, initial);
        coordinator.Host.State.Rounds.RecordDecline(runId, 1, "gone-3", "policy", "max_epsilon", "over its cap");
        adapter.ApplyMeanUpdate(Enumerable.Repeat(0.125f, adapter.BDimension).ToArray());
        Coordinator.State.StoredAdapter released = coordinator.Host.Adapters.Write(adapter.Serialize());
        coordinator.Host.State.Rounds.Complete(new Coordinator.State.RoundCompletion(
            new Coordinator.State.LedgerRecord(0, runId, 1, "recorded-report", 0.875, 0.875, 1e-6, 1, 1, 1, 2, DateTimeOffset.UtcNow)
            {
                Rdp = new Coordinator.State.RdpCharge(RdpOrders.Default, [.. RdpOrders.Default.Select(a => 0.01 * a)]),
            },
            released,
            new Dictionary<string, Coordinator.State.ParticipantStatus>
            {
                ["gone-1"] = Coordinator.State.ParticipantStatus.Uploaded,
                ["gone-2"] = Coordinator.State.ParticipantStatus.Uploaded,
                ["gone-3"] = Coordinator.State.ParticipantStatus.Declined,
                ["gone-4"] = Coordinator.State.ParticipantStatus.Dropped,
            }));
        coordinator.Host.State.Rounds.Start(runId, 2, new Dictionary<string, int> { ["gone-1"] = 1, ["gone-2"] = 2, ["gone-4"] = 3 }, released.Sha256);
        coordinator.Host.State.Rounds.Fail(runId, 2, "1 of 3 survivors, 2 needed");
        coordinator.Host.State.Runs.End(runId, RunState.Failed, "round 2 failed", "coordinator");

        string directory = Path.Combine(coordinator.Root, "report-recorded");
        var (code, output, error) = await AsAsync("engineer", "run", "report", "--run", runId, "--out", directory, "--json");

        Assert.True(code == 0, error);
        JsonElement[] rounds = [.. JsonDocument.Parse(output).RootElement.GetProperty("rounds").EnumerateArray()];
        Assert.Equal(2, rounds.Length);
        Assert.Equal(("released", 4, 2, 1, 1, 0.875), (rounds[0].GetProperty("outcome").GetString(), rounds[0].GetProperty("selected").GetInt32(),
            rounds[0].GetProperty("survivors").GetInt32(), rounds[0].GetProperty("declined").GetInt32(), rounds[0].GetProperty("dropouts").GetInt32(),
            rounds[0].GetProperty("epsilon_after").GetDouble()));
        Assert.Equal(("failed", 3, JsonValueKind.Null, JsonValueKind.Null, JsonValueKind.Null), (rounds[1].GetProperty("outcome").GetString(),
            rounds[1].GetProperty("selected").GetInt32(), rounds[1].GetProperty("survivors").ValueKind, rounds[1].GetProperty("dropouts").ValueKind,
            rounds[1].GetProperty("epsilon_after").ValueKind));
        string html = await File.ReadAllTextAsync(Path.Combine(directory, "report.html"));
        Assert.Contains("<td>released</td><td class=\"n\">4</td><td class=\"n\">2</td><td class=\"n\">1</td><td class=\"n\">1</td><td class=\"n epsilon\">0.875</td>", html, StringComparison.Ordinal);
        Assert.Contains("<tr class=\"failed\"><td class=\"n\">2</td><td>failed: nothing released, nothing charged</td><td class=\"n\">3</td><td class=\"n\">&ndash;</td>", html, StringComparison.Ordinal);
        Assert.Equal((800, 450), PngFile.Check(Path.Combine(directory, "participation.png")));
    }

    [Fact]
    public async Task RunReport_UnknownRun_Exit1OneLineAndNoReport()
    {
        string directory = Path.Combine(coordinator.Root, "report-unknown");

        var (code, output, error) = await AsAsync("engineer", "run", "report", "--run", "run-0123456789abcdef", "--out", directory);

        Assert.Equal(1, code);
        Assert.Equal("", output);
        Assert.Equal("coordinator: error: NotFound: run 'run-0123456789abcdef' is not known to this coordinator", error.Trim());
        Assert.False(Directory.Exists(directory));
    }

    [Fact]
    public async Task RunReport_OutIsAFile_Exit2NamingTheFlagBeforeConnecting()
    {
        string file = Path.Combine(coordinator.Root, "a-file");
        await File.WriteAllTextAsync(file, "not a folder");

        var (code, output, error) = await RunAsync("run", "report", "--run", "run-1", "--out", file,
            "--coordinator", "https://127.0.0.1:1", "--identity", coordinator.Identity("engineer"), "--ca", coordinator.CaPath);

        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains($"--out '{file}' is a file", error, StringComparison.Ordinal);
        Assert.Single(error.Trim().Split('\n'));
        Assert.Equal("not a folder", await File.ReadAllTextAsync(file));
    }

    [Fact]
    public void PngCrc32_KnownAnswer()
    {
        // The CRC-32 check value of ISO 3309 / ITU-T V.42.
        Assert.Equal(0xCBF43926u, PngFile.Crc32("123456789"u8));
    }

    private static int CountOf(string text, string value) =>
        (text.Length - text.Replace(value, "", StringComparison.Ordinal).Length) / value.Length;

    private static Task<(int Code, string Out, string Err)> RunAsync(params string[] args) =>
        ConsoleCapture.RunAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args));

    private Task<(int Code, string Out, string Err)> AsAsync(string identity, params string[] args) =>
        RunAsync([.. args, "--coordinator", coordinator.Address.ToString(), "--identity", coordinator.Identity(identity), "--ca", coordinator.CaPath]);
}
