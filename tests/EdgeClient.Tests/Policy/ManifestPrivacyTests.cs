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

    [Theory]
    // Sparse graph: noise sized for 67 shares, but a coordinator that discards uploads can release a sum of 24 members
    // (each needs 24 seed shares from members): the edge charges 24.
    [InlineData(46u, 24u, 67u, 24)]
    [InlineData(46u, 24u, 20u, 20)]
    // Complete graph: the priced threshold is what every release carries.
    [InlineData(99u, 67u, 67u, 67)]
    [InlineData(99u, 60u, 80u, 60)]
    [InlineData(99u, 67u, 0u, 67)]
    public void GuaranteedShares_IsTheFewestSharesAnyReleaseCarries(uint neighbours, uint threshold, uint minSurvivors, int guaranteed)
    {
        RoundManifest manifest = Manifest(neighbours, threshold, minSurvivors);

        Assert.Equal(guaranteed, ManifestPrivacy.GuaranteedShares(manifest.Dp, manifest.Secagg));
    }

    [Fact]
    public void Ledger_SparseRound_ChargedWithTheGuaranteedSharesAboveTheCoordinatorsPriceAndKeptAcrossAReopen()
    {
        string dir = Directory.CreateTempSubdirectory("sparse-ledger-").FullName;
        try
        {
            RoundManifest manifest = Manifest(46, 24, 67);
            PrivacyPlanParameters parameters = ManifestPrivacy.Parameters(manifest, Dimension);
            PrivacyPlan plan = PrivacyPlan.Create(parameters);
            var policy = new LocalPolicy
            {
                Delta = 1e-5, MaxEpsilonPerRun = 100, MaxEpsilonLifetime = 1000, MinNoiseMultiplier = 0.5,
                AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam], AllowedTargetModules = ["q_proj"], MaxRank = 8, MaxRoundsPerDay = 10,
            };
            string path = Path.Combine(dir, LocalPrivacyLedger.FileName);
            using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(path))
            {
                var gate = new LocalPolicyGate(policy, ledger, TimeProvider.System);
                var terms = new RoundTerms("run-1", 1, NoiseMechanismKind.DistributedSkellam, 1.0, 1.0, ["q_proj"], 4, "", 100, 24, parameters)
                {
                    Neighbours = 46,
                    MinSurvivors = 67,
                    PricedShares = ManifestPrivacy.GuaranteedShares(manifest.Dp, manifest.Secagg),
                };
                Assert.True(gate.ChargeBeforeUpload(terms).Accepted);
            }

            using LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(path);
            double charged = reopened.Spent(1e-5, "run-1").Epsilon;
            Assert.Equal(RdpAnalysis.Epsilon(plan.Orders, plan.SharesRoundRdp(24)!, 1e-5).Epsilon, charged, 9);
            Assert.True(charged > plan.EpsilonAfter(1).Epsilon, $"{charged} vs the coordinator's {plan.EpsilonAfter(1).Epsilon}");
            Assert.Equal(24, Assert.Single(reopened.Charges).PricedShares);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Parameters_MinSurvivorsAboveTheParticipants_RefusedNamingTheField()
    {
        PrivacyPlanException refused = Assert.Throws<PrivacyPlanException>(() => ManifestPrivacy.Parameters(Manifest(46, 24, 101), Dimension));

        Assert.Equal("min_survivors", refused.ParamName);
    }
}
