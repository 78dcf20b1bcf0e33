using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Federated.Protos.V1;

namespace Federated.EdgeClient.Tests.Policy;

public sealed class ManifestPrivacyTests
{
    private const int Dimension = 512;

    // n = 100 on a sparse graph (k = 46, graph t = 24) or the complete graph (k = 99), with the given release threshold.
    private static RoundManifest Manifest(uint neighbours, uint threshold, uint minSurvivors) => new()
    {
        Round = new RoundRef { RunId = "run-1", Round = 1 },
        Secagg = new SecAggParameters { Participants = 100, Threshold = threshold, Neighbours = neighbours, RingBits = 32, VectorLength = Dimension },
        Dp = new DpParameters
        {
            Mechanism = NoiseMechanism.DistributedSkellam,
            ClipNorm = 1.0,
            NoiseMultiplier = 1.0,
            Delta = 1e-5,
            MaxClients = 100,
            MinSurvivors = minSurvivors,
            Adjacency = PrivacyUnitNames.Name(PrivacyUnitNames.ProductAdjacency),
        },
    };

    [Fact]
    public void Parameters_SparseRound_PricedWithMinSurvivorsNotTheGraphThreshold()
    {
        PrivacyPlanParameters sparse = ManifestPrivacy.Parameters(Manifest(46, 24, 67), Dimension);
        PrivacyPlanParameters byGraph = ManifestPrivacy.Parameters(Manifest(46, 24, 24), Dimension);

        Assert.Equal(67, sparse.Threshold);
        // 67 noise shares carry the planned noise; pricing with the graph's 24 would claim a far higher epsilon.
        Assert.True(PrivacyPlan.Create(sparse).Epsilon.Epsilon < PrivacyPlan.Create(byGraph).Epsilon.Epsilon);
    }

    [Fact]
    public void Parameters_ManifestFromBeforeTheField_PricedWithTheSecAggThreshold()
    {
        Assert.Equal(67, ManifestPrivacy.Parameters(Manifest(99, 67, 0), Dimension).Threshold);
    }

    [Theory]
    // Complete graph: 60 shares already unmask a sum of 60, so a claimed 80 is not believed.
    [InlineData(99u, 60u, 80u, 60)]
    [InlineData(99u, 67u, 60u, 60)]
    // Sparse graph: a release threshold below the graph's is taken as it is (fewer shares, a higher epsilon).
    [InlineData(46u, 24u, 20u, 20)]
    public void Parameters_WhereEitherThresholdCouldBoundTheRelease_TheSmallerIsPriced(uint neighbours, uint threshold, uint minSurvivors, int priced)
    {
        Assert.Equal(priced, ManifestPrivacy.Parameters(Manifest(neighbours, threshold, minSurvivors), Dimension).Threshold);
    }

    [Fact]
    public void Parameters_MinSurvivorsAboveTheParticipants_RefusedNamingTheField()
    {
        PrivacyPlanException refused = Assert.Throws<PrivacyPlanException>(() => ManifestPrivacy.Parameters(Manifest(46, 24, 101), Dimension));

        Assert.Equal("min_survivors", refused.ParamName);
    }
}
