using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Microsoft.Data.Sqlite;

namespace Federated.EdgeClient.Tests.Policy;

public sealed class LocalPrivacyLedgerTests : IDisposable
{
    // A small FFA-LoRA round: d = 512 lora_B values, 32-bit ring, C = 1, z = 0.9, n = 5 clients with threshold 4.
    private static readonly PrivacyPlanParameters s_plan = new(PrivacyMechanism.DistributedSkellam, 512, 5, 4, 32, 1.0, 0.9, 1, 1e-6);

    private readonly string _dir = Directory.CreateTempSubdirectory("edge-ledger-").FullName;

    private string LedgerPath => Path.Combine(_dir, LocalPrivacyLedger.FileName);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(20)]
    public void Spent_SkellamRounds_EqualsTheCoordinatorsPriceForTheSameRounds(int rounds)
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        for (int round = 1; round <= rounds; round++)
        {
            ledger.Record(Charge("run-1", round));
        }

        double edge = ledger.Spent(1e-6, "run-1").Epsilon;

        // The coordinator's pricing (RunPricing through PrivacyPlan): the plan's round RDP composed over the rounds.
        double coordinator = PrivacyPlan.Create(s_plan with { Rounds = rounds }).Epsilon.Epsilon;
        Assert.Equal(coordinator, edge, 12);
    }

    [Fact]
    public void Spent_SkellamOnASmallRing_ChargesTheRoundingInflatedSensitivityNotTheGaussianOfTheSameZ()
    {
        // A 16-bit ring over 1000 clients forces a small scale, so conditional rounding inflates the integer
        // sensitivity: the Skellam price is then above the (replace-one) Gaussian price of the same z, the old charge.
        PrivacyPlanParameters smallRing = s_plan with { Bits = 16, Clients = 1000, Threshold = 800 };
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        ledger.Record(new LocalCharge("run-1", 1, NoiseMechanismKind.DistributedSkellam, 0.9, 1.0, DateTimeOffset.UnixEpoch, smallRing));

        double edge = ledger.Spent(1e-6).Epsilon;

        double skellam = PrivacyPlan.Create(smallRing).Epsilon.Epsilon;
        double gaussian = RdpAnalysis.Epsilon(RdpOrders.Default, RdpAnalysis.SubsampledGaussian(1.0, 0.9 / 2, RdpOrders.Default), 1e-6).Epsilon;
        Assert.Equal(skellam, edge, 12);
        Assert.True(edge > gaussian * (1 + 1e-6), $"Skellam {edge} vs Gaussian {gaussian}");
    }

    [Fact]
    public void Spent_CentralRound_ChargesTheDiscreteGaussianPlanAtReplaceOne()
    {
        PrivacyPlanParameters central = s_plan with { Mechanism = PrivacyMechanism.CentralGaussian, NoiseMultiplier = 1.0 };
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        ledger.Record(new LocalCharge("run-c", 1, NoiseMechanismKind.CentralGaussian, 1.0, 1.0, DateTimeOffset.UnixEpoch, central));
        ledger.Record(new LocalCharge("run-c", 2, NoiseMechanismKind.CentralGaussian, 1.0, 1.0, DateTimeOffset.UnixEpoch, central));

        // sigma^2 = ceil(z^2 B) = B at z = 1, sensitivity 2 sqrt(B): RDP 2a per round, 4a for two.
        double expected = RdpAnalysis.Epsilon(RdpOrders.Default, [.. RdpOrders.Default.Select(a => 4 * a)], 1e-6).Epsilon;
        Assert.Equal(expected, ledger.Spent(1e-6).Epsilon, 9);
    }

    [Fact]
    public void Open_AfterRestart_KeepsThePlansAndTheEpsilon()
    {
        double before;
        PrivacyPlanParameters central = s_plan with { Mechanism = PrivacyMechanism.CentralGaussian, NoiseMultiplier = 1.2 };
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath))
        {
            ledger.Record(Charge("run-1", 1));
            ledger.Record(Charge("run-1", 2));
            ledger.Record(new LocalCharge("run-2", 1, NoiseMechanismKind.CentralGaussian, 1.2, 1.0, DateTimeOffset.UnixEpoch, central));
            ledger.Record(new LocalCharge("run-3", 1, NoiseMechanismKind.CentralGaussian, 1.2, 1.0, DateTimeOffset.UnixEpoch));
            before = ledger.Spent(1e-5).Epsilon;
        }

        using LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(LedgerPath);

        Assert.Equal(s_plan, reopened.Charges[0].Plan);
        Assert.Equal(central, reopened.Charges[2].Plan);
        Assert.Null(reopened.Charges[3].Plan);
        Assert.Equal(before, reopened.Spent(1e-5).Epsilon);
    }

    [Fact]
    public void Open_LedgerFromBeforeSkellamColumns_MigratesAndAccountsOldRowsAsTheReplaceOneGaussian()
    {
        using (var connection = new SqliteConnection($"Data Source={LedgerPath};Pooling=False"))
        {
            connection.Open();
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = """
                CREATE TABLE charges (run_id TEXT NOT NULL, round INTEGER NOT NULL, mechanism TEXT NOT NULL, noise_multiplier REAL NOT NULL,
                    sampling_rate REAL NOT NULL, charged_at TEXT NOT NULL, PRIMARY KEY (run_id, round));
                INSERT INTO charges VALUES ('old', 1, 'distributed_skellam', 1.1, 1.0, '2026-01-01T00:00:00.0000000+00:00');
                """;
            command.ExecuteNonQuery();
        }

        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        ledger.Record(Charge("new", 1));

        // Replace-one doubles the sensitivity: the Gaussian of z / 2, at q = 1 (was the zero-out Gaussian of z).
        var expected = new RdpAccountant();
        expected.ComposeSubsampledGaussian(1.0, 1.1 / 2);
        Assert.Equal(expected.GetEpsilon(1e-5).Epsilon, ledger.Spent(1e-5, "old").Epsilon, 12);
        Assert.Null(ledger.Charges[0].Plan);
        Assert.Equal(s_plan, ledger.Charges[1].Plan);
    }

    [Fact]
    public void Open_SkellamRowWrittenBeforeTheRelationWasKept_RepricedAtReplaceOne()
    {
        using (var connection = new SqliteConnection($"Data Source={LedgerPath};Pooling=False"))
        {
            connection.Open();
            using SqliteCommand command = connection.CreateCommand();
            command.CommandText = """
                CREATE TABLE charges (run_id TEXT NOT NULL, round INTEGER NOT NULL, mechanism TEXT NOT NULL, noise_multiplier REAL NOT NULL,
                    sampling_rate REAL NOT NULL, charged_at TEXT NOT NULL, skellam_dimension INTEGER, skellam_bits INTEGER, skellam_clip_norm REAL,
                    skellam_max_clients INTEGER, skellam_min_clients INTEGER, skellam_beta REAL, skellam_wrap REAL, PRIMARY KEY (run_id, round));
                INSERT INTO charges VALUES ('old', 1, 'distributed_skellam', 0.9, 1.0, '2026-01-01T00:00:00.0000000+00:00', 512, 32, 1.0, 5, 4, 0.60653065971263342, 4.0);
                """;
            command.ExecuteNonQuery();
        }

        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);

        // Charged at zero-out when it was written; the truth for a public roster is replace-one, priced on every open.
        double replaceOne = PrivacyPlan.Create(s_plan with { Delta = 1e-5 }).Epsilon.Epsilon;
        double zeroOut = PrivacyPlan.Create(s_plan with { Delta = 1e-5, Adjacency = Adjacency.ZeroOut }).Epsilon.Epsilon;
        Assert.Equal(replaceOne, ledger.Spent(1e-5).Epsilon, 12);
        Assert.True(replaceOne > 2 * zeroOut);
    }

    private static LocalCharge Charge(string run, long round) =>
        new(run, round, NoiseMechanismKind.DistributedSkellam, s_plan.NoiseMultiplier, 1.0, DateTimeOffset.UnixEpoch.AddHours(round), s_plan);
}
