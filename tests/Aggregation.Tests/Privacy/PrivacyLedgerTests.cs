using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class PrivacyLedgerTests
{
    private static double[] Gaussian(PrivacyLedger ledger, double q, double z, long rounds = 1) =>
        RdpAnalysis.SubsampledGaussian(q, z, ledger.Orders).Select(v => v * rounds).ToArray();

    // The scenario: budget 10; a run planned at about epsilon 8 (central, replace-one, 20 rounds of z = 5.8 at
    // delta 1e-5 is 7.84).
    private static PrivacyPlan EightEpsilonRun() =>
        PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, 4096, 10, 7, 32, 1.0, 5.8, 20, 1e-5));

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
            double[] rdp = accepted.TryGetValue((run, round), out double[]? previous) ? previous : Gaussian(ledger, q, z);
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
    public void Reserve_TwoEightEpsilonRunsAgainstBudgetTen_SecondRefused()
    {
        PrivacyPlan plan = EightEpsilonRun();
        Assert.InRange(plan.Epsilon.Epsilon, 7.5, 8.0);
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));

        ReservationResult first = ledger.Reserve("run-1", plan.RdpAfter(20));
        ReservationResult second = ledger.Reserve("run-2", plan.RdpAfter(20));

        Assert.Equal(ReservationOutcome.Reserved, first.Outcome);
        Assert.Equal(ReservationOutcome.Refused, second.Outcome);
        Assert.Equal(0, ledger.Spent.Epsilon);
        Assert.Equal(plan.Epsilon.Epsilon, ledger.Balance.Reserved, 1e-9);
        Assert.Equal(10 - plan.Epsilon.Epsilon, ledger.Balance.Remaining, 1e-9);
        Assert.False(ledger.IsReserved("run-2"));
        // Composed per order, the two runs together would be eps(2 x RDP), less than 8 + 8 but still above 10.
        double together = RdpAnalysis.Epsilon(ledger.Orders, plan.RdpAfter(40), 1e-5).Epsilon;
        Assert.InRange(together, 10, 2 * plan.Epsilon.Epsilon);
    }

    [Fact]
    public void Reserve_ParallelStarts_AcceptedPlansNeverExceedTheBudget()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(20, 1e-5));
        var random = new Random(9);
        double[][] plans = Enumerable.Range(0, 64)
            .Select(_ => Gaussian(ledger, 1.0, 2 + 4 * random.NextDouble(), random.Next(1, 30))).ToArray();
        var accepted = new System.Collections.Concurrent.ConcurrentBag<int>();

        Parallel.For(0, plans.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            if (ledger.Reserve($"run-{i}", plans[i]).Outcome == ReservationOutcome.Reserved)
            {
                accepted.Add(i);
            }
        });

        Assert.NotEmpty(accepted);
        Assert.True(accepted.Count < plans.Length, "every plan fitted; the test would not see a refusal");
        var composed = new RdpAccountant(ledger.Orders);
        foreach (int i in accepted)
        {
            composed.Compose(plans[i]);
        }
        Assert.True(composed.GetEpsilon(1e-5).Epsilon <= 20);
        Assert.Equal(composed.GetEpsilon(1e-5).Epsilon, ledger.Balance.Reserved, 1e-9);
    }

    [Fact]
    public void Charge_WithinReservation_MovesReservedToSpentAndKeepsCommitted()
    {
        PrivacyPlan plan = EightEpsilonRun();
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));
        ledger.Reserve("run", plan.RdpAfter(20));
        double committed = ledger.Balance.Spent + ledger.Balance.Reserved;
        for (int round = 1; round <= 20; round++)
        {
            Assert.Equal(ChargeOutcome.Charged, ledger.Charge("run", round, plan.RdpAfter(1)).Outcome);
            Assert.Equal(committed, ledger.Balance.Spent + ledger.Balance.Reserved, 1e-9);
        }
        Assert.Equal(plan.Epsilon.Epsilon, ledger.Spent.Epsilon, 1e-9);
        Assert.Equal(0, ledger.Balance.Reserved, 1e-9);
    }

    [Fact]
    public void Charge_Overspend_RefusedAndNothingChanges()
    {
        PrivacyPlan plan = EightEpsilonRun();
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));
        ledger.Reserve("run-1", plan.RdpAfter(20));
        for (int round = 1; round <= 20; round++)
        {
            ledger.Charge("run-1", round, plan.RdpAfter(1));
        }
        PrivacyBalance before = ledger.Balance;
        // Rounds beyond the plan are not covered by the reservation: they are charged while the budget holds, then refused.
        ChargeOutcome outcome = ChargeOutcome.Charged;
        int extra = 0;
        while (outcome == ChargeOutcome.Charged)
        {
            extra++;
            outcome = ledger.Charge("run-1", 20 + extra, plan.RdpAfter(1)).Outcome;
        }
        Assert.Equal(ChargeOutcome.Refused, outcome);
        Assert.True(ledger.Spent.Epsilon <= 10);
        Assert.True(ledger.Spent.Epsilon > before.Spent);
        Assert.False(ledger.IsCharged("run-1", 20 + extra));
        // A charge that another run's reservation leaves no room for is refused too.
        var crowded = new PrivacyLedger("q", new PrivacyBudget(10, 1e-5));
        crowded.Reserve("big", plan.RdpAfter(20));
        Assert.Equal(ChargeOutcome.Refused, crowded.Charge("unplanned", 1, plan.RdpAfter(10)).Outcome);
        Assert.Equal(0, crowded.Spent.Epsilon);
    }

    [Fact]
    public void Release_AbortedRun_FreesWhatItDidNotSpend()
    {
        PrivacyPlan plan = EightEpsilonRun();
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));
        ledger.Reserve("aborted", plan.RdpAfter(20));
        ledger.Charge("aborted", 1, plan.RdpAfter(1));
        ledger.Charge("aborted", 2, plan.RdpAfter(1));
        Assert.Equal(ReservationOutcome.Refused, ledger.Reserve("next", plan.RdpAfter(20)).Outcome);

        Assert.True(ledger.Release("aborted"));

        Assert.Equal(0, ledger.Balance.Reserved);
        Assert.Equal(plan.EpsilonAfter(2).Epsilon, ledger.Spent.Epsilon, 1e-9);
        Assert.False(ledger.Release("aborted"));
        Assert.Equal(ReservationOutcome.Reserved, ledger.Reserve("next", plan.RdpAfter(20)).Outcome);
    }

    [Fact]
    public void Reserve_SameRunTwice_IdempotentForTheSamePlanOnly()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));
        double[] plan = Gaussian(ledger, 1.0, 3.0, 5);
        Assert.Equal(ReservationOutcome.Reserved, ledger.Reserve("run", plan).Outcome);
        double reserved = ledger.Balance.Reserved;
        Assert.Equal(ReservationOutcome.AlreadyReserved, ledger.Reserve("run", plan).Outcome);
        Assert.Equal(reserved, ledger.Balance.Reserved);
        Assert.Throws<InvalidOperationException>(() => ledger.Reserve("run", Gaussian(ledger, 1.0, 3.0, 6)));
    }

    [Fact]
    public void ChangeBudget_BelowSpentAndReserved_RefusedNamingBothNumbers()
    {
        PrivacyPlan plan = EightEpsilonRun();
        var ledger = new PrivacyLedger("hospitals", new PrivacyBudget(10, 1e-5));
        ledger.Reserve("run", plan.RdpAfter(20));
        ledger.Charge("run", 1, plan.RdpAfter(1));

        BudgetChangeResult lowered = ledger.ChangeBudget(new PrivacyBudget(5, 1e-5));

        Assert.False(lowered.Changed);
        Assert.Equal(10, ledger.Budget.Epsilon);
        Assert.Contains($"already spent ({lowered.Balance.Spent:G6})", lowered.Refusal, StringComparison.Ordinal);
        Assert.Contains($"reserved ({lowered.Balance.Reserved:G6})", lowered.Refusal, StringComparison.Ordinal);
        Assert.True(ledger.ChangeBudget(new PrivacyBudget(9, 1e-5)).Changed);
        Assert.Equal(9, ledger.Budget.Epsilon);
        // A smaller delta raises the epsilon of the same RDP: the check is made at the new delta.
        Assert.False(ledger.ChangeBudget(new PrivacyBudget(8.0, 1e-12)).Changed);
    }

    [Fact]
    public void AffordableRounds_AgreesWithCharging()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(2.0, 1e-5));
        double[] perRound = Gaussian(ledger, 0.05, 1.2);
        long affordable = ledger.AffordableRounds(perRound);
        Assert.True(affordable > 1);
        Assert.True(ledger.CanAfford(Gaussian(ledger, 0.05, 1.2, affordable)));
        Assert.False(ledger.CanAfford(Gaussian(ledger, 0.05, 1.2, affordable + 1)));
        for (long r = 0; r < affordable; r++)
        {
            Assert.Equal(ChargeOutcome.Charged, ledger.Charge("run", r, perRound).Outcome);
        }
        Assert.Equal(ChargeOutcome.Refused, ledger.Charge("run", affordable, perRound).Outcome);
        Assert.Equal(0, ledger.AffordableRounds(perRound));
        Assert.True(ledger.RemainingEpsilon >= 0 && ledger.RemainingEpsilon < 2.0);
    }

    [Fact]
    public void Charge_SameRunAndRoundTwice_CountsOnce()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(10, 1e-5));
        double[] rdp = Gaussian(ledger, 0.1, 1.0);
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("run", 7, rdp).Outcome);
        double once = ledger.Spent.Epsilon;
        Assert.Equal(ChargeOutcome.AlreadyCharged, ledger.Charge("run", 7, rdp).Outcome);
        Assert.Equal(once, ledger.Spent.Epsilon);
        Assert.True(ledger.IsCharged("run", 7));
        Assert.Throws<InvalidOperationException>(() => ledger.Charge("run", 7, Gaussian(ledger, 0.2, 1.0)));
        // A different run with the same round number is a different charge.
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("other-run", 7, rdp).Outcome);
        Assert.True(ledger.Spent.Epsilon > once);
    }

    [Fact]
    public void ExportImport_RoundTrip_PreservesSpentReservationsAndIdempotency()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(5, 1e-6));
        ledger.Reserve("a", Gaussian(ledger, 1.0, 4.0, 3));
        ledger.Charge("a", 1, Gaussian(ledger, 1.0, 4.0));
        ledger.Charge("b", 1, Gaussian(ledger, 0.1, 2.0, 5));
        PrivacyLedgerState state = ledger.Export();

        PrivacyLedger restored = PrivacyLedger.Import(state);

        Assert.Equal(ledger.Balance, restored.Balance);
        Assert.Equal(ChargeOutcome.AlreadyCharged, restored.Charge("a", 1, state.Charges[0].Rdp).Outcome);
        Assert.Equal(ReservationOutcome.AlreadyReserved, restored.Reserve("a", Gaussian(ledger, 1.0, 4.0, 3)).Outcome);
        // A state whose charges or reservations exceed its budget is rejected, not silently truncated.
        Assert.Throws<InvalidDataException>(() => PrivacyLedger.Import(state with { BudgetEpsilon = 0.01 }));
        Assert.Throws<InvalidDataException>(() => PrivacyLedger.Import(state with { BudgetEpsilon = ledger.Spent.Epsilon + 1e-6 }));
    }

    [Fact]
    public void Charge_DistributedAndCentralRunsComposePerOrderInOneLedger()
    {
        var ledger = new PrivacyLedger("p", new PrivacyBudget(100, 1e-5));
        var parameters = new PrivacyPlanParameters(PrivacyMechanism.DistributedSkellam, 4096, 20, 10, 32, 1.0, 4.0, 3, 1e-5);
        PrivacyPlan distributed = PrivacyPlan.Create(parameters, ledger.Orders);
        PrivacyPlan central = PrivacyPlan.Create(parameters with { Mechanism = PrivacyMechanism.CentralGaussian }, ledger.Orders);
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("dist", 0, distributed.RdpAfter(1)).Outcome);
        Assert.Equal(ChargeOutcome.Charged, ledger.Charge("central", 0, central.RdpAfter(1)).Outcome);
        var reference = new RdpAccountant(ledger.Orders);
        reference.Compose(distributed.RdpAfter(1));
        reference.Compose(central.RdpAfter(1));
        Assert.Equal(reference.GetEpsilon(1e-5).Epsilon, ledger.Spent.Epsilon, 1e-12);
        Assert.True(ledger.Spent.Epsilon < distributed.EpsilonAfter(1).Epsilon + central.EpsilonAfter(1).Epsilon);
    }

    [Fact]
    public void Constructor_BadBudget_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivacyLedger("p", new PrivacyBudget(0, 1e-5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivacyLedger("p", new PrivacyBudget(1, 1)));
        var ledger = new PrivacyLedger("p", new PrivacyBudget(1, 1e-5));
        Assert.Throws<ArgumentException>(() => ledger.Charge("r", 0, new double[3]));
        Assert.Throws<ArgumentException>(() => ledger.Reserve("r", new double[3]));
    }
}
