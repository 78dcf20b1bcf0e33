using System.Text.Json;
using Federated.Cli;

namespace Federated.Simulation.Tests;

public sealed class SimulationDataTests
{
    [Fact]
    public void Synthetic_SameSeed_SameDataOtherSeedOtherData()
    {
        IReadOnlyList<string> names = SimulationData.ClientNames(3);

        IReadOnlyList<ClientData> first = SimulationData.Synthetic(names, 11);
        IReadOnlyList<ClientData> again = SimulationData.Synthetic(names, 11);
        IReadOnlyList<ClientData> other = SimulationData.Synthetic(names, 12);

        Assert.Equal(["client-1", "client-2", "client-3"], first.Select(c => c.Name));
        Assert.Equal(first[0].TrainLines, again[0].TrainLines);
        Assert.Equal(first[2].EvalLines, again[2].EvalLines);
        Assert.NotEqual(first[0].TrainLines, other[0].TrainLines);
    }

    [Fact]
    public void Synthetic_EachClient_OwnTopicAndHeldOutSentencesNeverTrainedOn()
    {
        IReadOnlyList<ClientData> clients = SimulationData.Synthetic(SimulationData.ClientNames(2), 5);

        foreach (ClientData client in clients)
        {
            Assert.Equal(SimulationData.SyntheticTrainExamples, client.TrainLines.Count);
            Assert.Equal(SimulationData.SyntheticEvalExamples, client.EvalLines.Count);
            Assert.Empty(client.EvalLines.Intersect(client.TrainLines));
        }
        // Non-IID: the two clients share no sentence (different topics).
        Assert.Empty(clients[0].TrainLines.Intersect(clients[1].TrainLines));
        Assert.All(clients[0].TrainLines, line => Assert.False(string.IsNullOrEmpty(JsonDocument.Parse(line).RootElement.GetProperty("text").GetString())));
    }

    [Fact]
    public void FromDirectory_EvalFileOrLastFifth_HeldOut()
    {
        using var dir = new TempDirectory();
        string[] ten = [.. Enumerable.Range(0, 10).Select(i => SimulationData.Json($"line {i}"))];
        File.WriteAllLines(dir.File("client-1.jsonl"), ten);
        File.WriteAllLines(dir.File("client-2.jsonl"), ten);
        File.WriteAllLines(dir.File("client-2.eval.jsonl"), [SimulationData.Json("held out")]);

        IReadOnlyList<ClientData> clients = SimulationData.FromDirectory(dir.Path, SimulationData.ClientNames(2));

        Assert.Equal(ten[..8], clients[0].TrainLines);
        Assert.Equal(ten[8..], clients[0].EvalLines);
        Assert.Equal(ten, clients[1].TrainLines);
        Assert.Equal([SimulationData.Json("held out")], clients[1].EvalLines);
    }

    [Fact]
    public void FromDirectory_MissingClientFile_UsageErrorNamingIt()
    {
        using var dir = new TempDirectory();
        File.WriteAllLines(dir.File("client-1.jsonl"), [SimulationData.Json("a"), SimulationData.Json("b")]);

        var error = Assert.Throws<UsageException>(() => SimulationData.FromDirectory(dir.Path, SimulationData.ClientNames(2)));

        Assert.Contains("client-2.jsonl", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WithCanaries_EachCanaryRepeatedOriginalLinesKept()
    {
        ClientData client = SimulationData.Synthetic(SimulationData.ClientNames(2), 1)[0];

        ClientData planted = SimulationData.WithCanaries(client, ["my secret code is 1 2 3 4 5 6", "my secret code is 9 9 9 9 9 9"], repeats: 7);

        Assert.Equal(client.TrainLines.Count + 14, planted.TrainLines.Count);
        Assert.Equal(7, planted.TrainLines.Count(l => l == SimulationData.Json("my secret code is 1 2 3 4 5 6")));
        Assert.Equal(7, planted.TrainLines.Count(l => l == SimulationData.Json("my secret code is 9 9 9 9 9 9")));
        Assert.Equal(client.TrainLines, planted.TrainLines.Where(l => !l.Contains("secret", StringComparison.Ordinal)));
        Assert.Equal(client.EvalLines, planted.EvalLines);
    }
}
