using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class PrivacyLedgerTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Charge_RandomSequences_NeverExceedBudgetAndCountRepeatsOnce(int seed)
    {
        var random = new Random(seed);
        var budget = new PrivacyBudget(1.0 + random.NextDouble() * 4, 1e-5);
        var ledger = new PrivacyLedger("population-a", budget);
        var accepted = new Dictionary<(string, long), double[]>();
        for (int step = 0; step < 300; step++)
        {
            string run = $"run-{random.Next(3)}";
            long round = random.Next(40);
            double q = new[] { 0.01, 0.05, 0.2, 1.0 }[random.Next(4)];
            double z = 0.6 + random.NextDouble() * 3;
            double[] rdp = accepted.TryGetValue((run, round), out double[]? previous)
                ? previous
                : ledger.SubsampledGaussianCharge(q, z);
            double before = ledger.Spent.Epsilon;
            bool wouldFit = ledger.CanAfford(rdp);
            ChargeResult result = ledger.Charge(run, round, rdp);

            Assert.True(ledger.Spent.Epsilon <= budget.Epsilon, $"spent {ledger.Spent.Epsilon} > budget {budget.Epsilon}");
            if (previous is not null)
            {
                Assert.Equal(ChargeOutcome.AlreadyCharged, result.Outcome);
                Assert.Equal(before, ledger.Spent.Epsilon);
            }
            else if (wouldFit)
            {
                Assert.Equal(ChargeOutcome.Charged, result.Outcome);
                accepted[(run, round)] = rdp;
            }
            else
            {
                Assert.Equal(ChargeOutcome.Refused, result.Outcome);
                Assert.Equal(before, ledger.Spent.Epsilon);
            }
        }

        // The ledger's total is exactly the composition of the distinct accepted charges.
        var reference = new RdpAccountant();
        foreach (double[] rdp in accepted.Values)
        {
            reference.Compose(rdp);
        }
        Assert.Equal(reference.GetEpsilon(budget.Delta).Epsilon, ledger.Spent.Epsilon, 1e-9);
        Assert.Equal(accepted.Count, ledger.Export().Charges.Length);
    }

    [Fact]
    public void Charge_SameRunAndRoundTwice_CountsOnce()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));
        double[] rdp = ledger.SubsampledGaussianCharge(0.1, 1.0);
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("run", 7, rdp).Outcome);
        double once = ledger.Spent.Epsilon;
        Assert.Equal(ChargeOutcome.AlreadyCharged, ledger.Charge("run", 7, rdp).Outcome);
        Assert.Equal(once, ledger.Spent.Epsilon);
        Assert.True(ledger.IsCharged("run", 7));
        Assert.Throws<InvalidOperationException>(() => ledger.Charge("run", 7, ledger.SubsampledGaussianCharge(0.2, 1.0)));
        // A different run with the same round number is a different charge.
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("other-run", 7, rdp).Outcome);
        Assert.True(ledger.Spent.Epsilon > once);
    }

    [Fact]
    public void CanAffordAndAffordableRounds_AgreeWithCharging()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(2.0, 1e-5));
        long affordable = ledger.AffordableRounds(0.05, 1.2);
        Assert.True(affordable > 1);
        Assert.True(ledger.CanAfford(ledger.SubsampledGaussianCharge(0.05, 1.2, affordable)));
        Assert.False(ledger.CanAfford(ledger.SubsampledGaussianCharge(0.05, 1.2, affordable + 1)));
        double[] perRound = ledger.SubsampledGaussianCharge(0.05, 1.2);
        for (long r = 0; r < affordable; r++)
        {
            Assert.Equal(ChargeOutcome.Charged, ledger.Charge("run", r, perRound).Outcome);
        }
        Assert.Equal(ChargeOutcome.Refused, ledger.Charge("run", affordable, perRound).Outcome);
        Assert.Equal(0, ledger.AffordableRounds(0.05, 1.2));
        Assert.True(ledger.RemainingEpsilon >= 0 && ledger.RemainingEpsilon < 2.0);
    }

    [Fact]
    public void ExportImport_RoundTrip_PreservesSpentAndIdempotency()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(5, 1e-6));
        ledger.Charge("a", 1, ledger.SubsampledGaussianCharge(0.1, 1.0));
        ledger.Charge("b", 1, ledger.SubsampledGaussianCharge(0.1, 2.0, 5));
        PrivacyLedgerState state = ledger.Export();
        PrivacyLedger restored = PrivacyLedger.Import(state);
        Assert.Equal(ledger.Spent.Epsilon, restored.Spent.Epsilon);
        Assert.Equal(ChargeOutcome.AlreadyCharged, restored.Charge("a", 1, state.Charges[0].Rdp).Outcome);

        // A state whose charges exceed its budget is rejected, not silently truncated.
        var tampered = state with { BudgetEpsilon = 0.01 };
        Assert.Throws<InvalidDataException>(() => PrivacyLedger.Import(tampered));
    }

    [Fact]
    public void Charge_DistributedSkellamRounds_ComposeWithGaussianRoundsInOneLedger()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(4, 1e-5));
        DSkellamPlan plan = DSkellamPlan.Calibrate(new DSkellamParameters(4096, 32, 1.0, 2.0, 20, 10));
        double[] skellam = plan.RdpPerRound(ledger.Orders);
        double[] gaussian = ledger.SubsampledGaussianCharge(1.0, 2.0);
        // Skellam's RDP is the Gaussian's a / (2 z^2) plus a small positive correction.
        for (int i = 0; i < skellam.Length; i++)
        {
            Assert.True(skellam[i] >= gaussian[i]);
            Assert.True(skellam[i] <= gaussian[i] * 1.001 + 1e-12);
        }
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("dist", 0, skellam).Outcome);
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("central", 0, gaussian).Outcome);
        var reference = new RdpAccountant(ledger.Orders);
        reference.ComposeSubsampledGaussian(1.0, 2.0);
        reference.ComposeSkellam(plan.L1Sensitivity, plan.L2Sensitivity, plan.NoiseVariance);
        Assert.Equal(reference.GetEpsilon(1e-5).Epsilon, ledger.Spent.Epsilon, 1e-12);
    }

    [Fact]
    public void Constructor_BadBudget_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivacyLedger("p", new PrivacyBudget(0, 1e-5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivacyLedger("p", new PrivacyBudget(1, 1)));
        var ledger = new PrivacyLedger("p", new PrivacyBudget(1, 1e-5));
        Assert.Throws<ArgumentException>(() => ledger.Charge("r", 0, new double[3]));
    }
}
