using Federated.Coordinator.Rounds;
using Microsoft.Extensions.Time.Testing;

namespace Federated.Coordinator.Tests.Rounds;

/// <summary>A round's deadlines carry the time its local training is allowed, and a missed training deadline names the flags to raise.</summary>
public sealed class SecAggRoundDeadlineTests
{
    private static readonly DateTimeOffset s_start = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Deadlines_TrainingAllowance_AddedToEveryStage()
    {
        var time = new FakeTimeProvider(s_start);

        using var round = new SecAggRound(Plan(TimeSpan.FromSeconds(600)), new byte[32], time);

        Assert.Equal([s_start.AddSeconds(660), s_start.AddSeconds(720), s_start.AddSeconds(780), s_start.AddSeconds(840)], round.Deadlines);
    }

    [Fact]
    public void MissingSummary_NobodyAdvertisedByTheTrainingDeadline_NamesBothPartsAndTheFlags()
    {
        var time = new FakeTimeProvider(s_start);
        using var round = new SecAggRound(Plan(TimeSpan.FromSeconds(600)), new byte[32], time);

        // 600 steps at 1 s each plus the 60 s stage: a fixed 60 s deadline would have cut the training at one minute.
        time.Advance(TimeSpan.FromSeconds(659));
        string before = round.MissingSummary();
        time.Advance(TimeSpan.FromSeconds(1));
        string after = round.MissingSummary();

        Assert.Equal("", before);
        Assert.Contains("2 missed the advertise_keys", after, StringComparison.Ordinal);
        Assert.Contains("deadline of 660 s (60 s stage timeout plus 600 s for local training); raise run start --stage-timeout, or serve --seconds-per-step", after, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingSummary_NoTrainingAllowance_NamesTheStageTimeoutFlag()
    {
        var time = new FakeTimeProvider(s_start);
        using var round = new SecAggRound(Plan(TimeSpan.Zero), new byte[32], time);

        time.Advance(TimeSpan.FromSeconds(60));

        Assert.Contains("deadline of 60 s; raise run start --stage-timeout", round.MissingSummary(), StringComparison.Ordinal);
    }

    private static SecAggRoundPlan Plan(TimeSpan training) =>
        new("deadline-run", 1, ["alice", "bob"], 16, 32, Degree: 1, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(60), TrainingAllowance: training);
}
