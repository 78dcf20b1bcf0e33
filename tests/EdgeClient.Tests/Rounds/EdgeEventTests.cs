using System.Text.Json;
using Federated.EdgeClient.Rounds;

namespace Federated.EdgeClient.Tests.Rounds;

/// <summary>`edge-client run --json` lines and the training progress throttle.</summary>
public sealed class EdgeEventTests
{
    [Fact]
    public void ToJson_TrainingStep_EventFirstSnakeCaseFieldsMessageLastNoNulls()
    {
        var change = new EdgeEvent(EdgeEvent.Training, "round 2 of abc: training step 30/600, loss 2.5000")
        {
            RunId = "abc",
            Round = 2,
            Step = 30,
            Steps = 600,
            Loss = 2.5,
        };

        string json = change.ToJson();

        Assert.Equal("""{"event":"training","run_id":"abc","round":2,"step":30,"steps":600,"loss":2.5,"message":"round 2 of abc: training step 30/600, loss 2.5000"}""", json);
    }

    [Fact]
    public void ToJson_ChargedWithInfiniteWorstCase_StillOneValidObject()
    {
        var change = new EdgeEvent(EdgeEvent.Charged, "charged") { RunEpsilon = 1.25, WorstCaseRunEpsilon = double.PositiveInfinity, Delta = 1e-5 };

        using JsonDocument parsed = JsonDocument.Parse(change.ToJson());

        Assert.Equal("charged", parsed.RootElement.GetProperty("event").GetString());
        Assert.Equal(1.25, parsed.RootElement.GetProperty("run_epsilon").GetDouble());
        Assert.Equal("Infinity", parsed.RootElement.GetProperty("worst_case_run_epsilon").GetString());
        Assert.False(parsed.RootElement.TryGetProperty("loss", out _));
    }

    [Fact]
    public void ToJson_DeclinedWithRule_CarriesTheRule()
    {
        string json = new EdgeEvent(EdgeEvent.Declined, "round 1 of r: declined (allowed_target_modules): target module gate_proj is not allowed")
        {
            RunId = "r",
            Round = 1,
            Rule = "allowed_target_modules",
        }.ToJson();

        Assert.Contains("\"rule\":\"allowed_target_modules\"", json, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(600)]
    [InlineData(5)]
    [InlineData(1)]
    [InlineData(99_999)]
    public void Shows_AnyRoundLength_AtMostElevenLinesAndAlwaysTheLast(int steps)
    {
        int[] shown = [.. Enumerable.Range(1, steps).Where(step => TrainingProgressLines.Shows(step, steps))];

        Assert.InRange(shown.Length, 1, TrainingProgressLines.LinesPerRound + 1);
        Assert.Equal(steps, shown[^1]);
    }
}
