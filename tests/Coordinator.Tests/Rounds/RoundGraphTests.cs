using Federated.Coordinator.Rounds;

namespace Federated.Coordinator.Tests.Rounds;

public sealed class RoundGraphTests
{
    [Theory]
    [InlineData(3, 2)]
    [InlineData(31, 21)]
    public void Choose_BelowTheSparseSize_CompleteGraphWithMinSurvivors(int participants, int minSurvivors)
    {
        Assert.Equal((participants - 1, minSurvivors), RoundGraph.Choose(participants, minSurvivors));
    }

    [Theory]
    [InlineData(60)]
    [InlineData(100)]
    [InlineData(1000)]
    public void Choose_LargeRound_SparseGraphWithANeighbourhoodMajorityBelowTheReleaseThreshold(int participants)
    {
        int minSurvivors = RunPlanValidation.DefaultThreshold(participants);

        (int degree, int threshold) = RoundGraph.Choose(participants, minSurvivors);

        Assert.InRange(degree, 2, participants - 2);
        Assert.Equal(0, degree % 2);
        Assert.True(2 * threshold > degree + 1);
        Assert.True(threshold < minSurvivors);
    }

    [Fact]
    public void Choose_MinSurvivorsAllButOne_SizedForThatDropoutOnly()
    {
        // One dropout of 100 at most: a smaller neighbourhood suffices than for the planned 15%.
        (int tight, _) = RoundGraph.Choose(100, 99);
        (int planned, _) = RoundGraph.Choose(100, 67);

        Assert.True(tight < planned, $"k = {tight} for min_survivors 99, {planned} for 67");
    }

    [Fact]
    public void Choose_MinSurvivorsAboveTheParticipants_RefusedNamingIt()
    {
        var refused = Assert.Throws<ArgumentOutOfRangeException>(() => RoundGraph.Choose(40, 41));

        Assert.Equal("minSurvivors", refused.ParamName);
    }
}
