using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Microsoft.Data.Sqlite;

namespace Federated.EdgeClient.Tests.Policy;

public sealed class LocalPrivacyLedgerTests : IDisposable
{
    // A small FFA-LoRA round: d = 512 lora_B values, 32-bit ring, C = 1, z = 0.9, n = 5 clients with threshold 4.
    private static readonly DSkellamParameters s_skellam = new(512, 32, 1.0, 0.9, 5, 4);

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
            ledger.Record(Skellam("run-1", round));
        }

        double edge = ledger.Spent(1e-6, "run-1").Epsilon;

        // The coordinator's pricing (RunPricing.EpsilonAfter): the plan's Skellam RDP per round times the rounds.
        double[] rdp = DSkellamPlan.Calibrate(s_skellam).RdpPerRound(RdpOrders.Default);
        double coordinator = RdpAnalysis.Epsilon(RdpOrders.Default, rdp.Select(r => r * rounds).ToArray(), 1e-6).Epsilon;
        Assert.Equal(coordinator, edge, 12);
    }

    [Fact]
    public void Spent_SkellamOnASmallRing_ChargesTheRoundingInflatedSensitivityNotTheGaussianOfTheSameZ()
    {
        // A 16-bit ring over 1000 clients forces a small scale, so conditional rounding inflates the integer
        // sensitivity: the Skellam price (5.88527 here) is then above the Gaussian price of the same z (5.88516, the old
        // charge) by far more than rounding error (1e-15).
        var smallRing = new DSkellamParameters(512, 16, 1.0, 0.9, 1000, 800);
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        ledger.Record(new LocalCharge("run-1", 1, NoiseMechanismKind.DistributedSkellam, 0.9, 1.0, DateTimeOffset.UnixEpoch, smallRing));

        double edge = ledger.Spent(1e-6).Epsilon;

        double skellam = RdpAnalysis.Epsilon(RdpOrders.Default, DSkellamPlan.Calibrate(smallRing).RdpPerRound(RdpOrders.Default), 1e-6).Epsilon;
        double gaussian = RdpAnalysis.Epsilon(RdpOrders.Default, RdpAnalysis.SubsampledGaussian(1.0, 0.9, RdpOrders.Default), 1e-6).Epsilon;
        Assert.Equal(skellam, edge, 12);
        Assert.True(edge > gaussian * (1 + 1e-6), $"Skellam {edge} vs Gaussian {gaussian}");
    }

    [Fact]
    public void Open_AfterRestart_KeepsTheSkellamParametersAndTheEpsilon()
    {
        double before;
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath))
        {
            ledger.Record(Skellam("run-1", 1));
            ledger.Record(Skellam("run-1", 2));
            ledger.Record(new LocalCharge("run-2", 1, NoiseMechanismKind.CentralGaussian, 1.2, 0.05, DateTimeOffset.UnixEpoch));
            before = ledger.Spent(1e-5).Epsilon;
        }

        using LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(LedgerPath);

        Assert.Equal(s_skellam, reopened.Charges[0].Skellam);
        Assert.Null(reopened.Charges[2].Skellam);
        Assert.Equal(before, reopened.Spent(1e-5).Epsilon);
    }

    [Fact]
    public void Open_LedgerFromBeforeSkellamColumns_MigratesAndAccountsOldRowsAsGaussian()
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
        ledger.Record(Skellam("new", 1));

        var expected = new RdpAccountant();
        expected.ComposeSubsampledGaussian(1.0, 1.1);
        Assert.Equal(expected.GetEpsilon(1e-5).Epsilon, ledger.Spent(1e-5, "old").Epsilon, 12);
        Assert.Null(ledger.Charges[0].Skellam);
        Assert.Equal(s_skellam, ledger.Charges[1].Skellam);
    }

    private static LocalCharge Skellam(string run, long round) =>
        new(run, round, NoiseMechanismKind.DistributedSkellam, s_skellam.NoiseMultiplier, 1.0, DateTimeOffset.UnixEpoch.AddHours(round), s_skellam);
}
