using System.Text.Json;
using Federated.Cli;
using Federated.Coordinator;
using Federated.Coordinator.Cli;
using Federated.Training.Model;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// `run status --watch` against a real coordinator whose stream cap (MaxStreamSeconds) is shorter than the run: the
/// server ends the WatchRun stream while the run waits for clients, and the CLI watches again until the run ends.
/// </summary>
[Collection(AdminCliCollection.Name)]
public sealed class RunWatchTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private const string WatchMethod = "/federated.v1.AdminService/WatchRun";

    [Fact]
    public async Task Watch_ServerEndsStreamsBeforeRunEnds_WatchesAgainAndExitsZeroWhenCompleted()
    {
        var logs = new CapturedLogs();
        var options = new CoordinatorOptions
        {
            Pki = coordinator.Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(coordinator.Root, "watch-cap.db"),
            MaxStreamSeconds = 2, StreamIdleSeconds = 2, HeartbeatIntervalSeconds = 1,
        };
        await using CoordinatorHost host = CoordinatorHost.Create(options, logging => logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        await host.StartAsync(CancellationToken.None);
        host.State.Budgets.Set("watch", 50, 1e-5, "officer");
        string model = Path.Combine(coordinator.Root, "base-watch");
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(), seed: 9);

        var (code, output, error) = await RunAsync(host, "run", "start", "--base-model", model, "--rank", "2", "--targets", "q_proj", "--rounds", "1",
            "--clients-per-round", "2", "--local-steps", "1", "--noise-multiplier", "1", "--delta", "1e-6", "--population", "watch", "--json");
        Assert.True(code == 0, error);
        string runId = JsonDocument.Parse(output).RootElement.GetProperty("run_id").GetString()!;

        // No client is online yet, so the run waits while the coordinator ends each WatchRun stream at its 2 s cap; a
        // second capped WatchRun can only come from the CLI watching again after the first ended.
        Task<(int Code, string Out, string Err)> watch = RunAsync(host, "run", "status", runId, "--watch", "--json");
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        Task[] clients = [];
        try
        {
            while (CappedWatches(logs) < 2)
            {
                if (watch.IsCompleted)
                {
                    (code, _, error) = await watch;
                    Assert.Fail($"the watch ended with exit {code} after {CappedWatches(logs)} capped stream(s): {error}");
                }
                await Task.Delay(50, stop.Token);
            }
            clients = [.. new[] { "alice", "bob" }.Select(name =>
                Task.Run(() => new RandomUpdateClient(name, coordinator.Identity(name), coordinator.CaPath, host.Address).RunAsync(stop.Token)))];

            (code, output, error) = await watch.WaitAsync(stop.Token);
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        }

        Assert.True(code == 0, error);
        JsonElement[] updates = [.. output.Trim().Split('\n').Select(line => JsonDocument.Parse(line).RootElement.Clone())];
        Assert.Equal("completed", updates[^1].GetProperty("state").GetString());
        Assert.Equal(1u, updates[^1].GetProperty("released_rounds").GetUInt32());
        Assert.Equal("pending", updates[0].GetProperty("state").GetString());
        // A new stream starts with the current status; the watch prints it only when something changed.
        for (int i = 1; i < updates.Length; i++)
        {
            Assert.NotEqual(WithoutTime(updates[i - 1]), WithoutTime(updates[i]));
        }
        Assert.True(CappedWatches(logs) >= 2);
    }

    private static int CappedWatches(CapturedLogs logs) =>
        logs.Lines.Count(l => l.EventId == 1010 && l.Message.Contains(WatchMethod, StringComparison.Ordinal));

    private static string WithoutTime(JsonElement status) =>
        string.Join(',', status.EnumerateObject().Where(p => p.Name != "updated_at").Select(p => p.Name + "=" + p.Value.GetRawText()));

    private Task<(int Code, string Out, string Err)> RunAsync(CoordinatorHost host, params string[] args) =>
        ConsoleCapture.RunAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure,
            [.. args, "--coordinator", host.Address.ToString(), "--identity", coordinator.Identity("engineer"), "--ca", coordinator.CaPath]));
}
