using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EdgeClient.Tests.Policy;

/// <summary>The record-level unit of the edge ledger and gate: DP-SGD rounds priced at this machine's own record count.</summary>
public sealed class RecordLevelLedgerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("edge-record-").FullName;
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 5, 12, 0, 0, TimeSpan.Zero));

    // 2 of 40 records per step (q = 0.05), z = 1.1, 10 local steps a round.
    private static readonly RecordLevelRound s_work = new(NoiseMultiplier: 1.1, MaxGradNorm: 1.0, ExpectedBatch: 2, Steps: 10, Records: 40);

    private static readonly LocalPolicy s_policy = new()
    {
        Delta = 1e-5,
        MaxEpsilonPerRun = 100,
        MaxEpsilonLifetime = 1000,
        MinNoiseMultiplier = 0.5,
        AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam],
        AllowedTargetModules = ["q_proj"],
        MaxRank = 16,
        MaxRoundsPerDay = 100,
        MaxRecordEpsilon = 10,
    };

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string LedgerPath => Path.Combine(_dir, LocalPrivacyLedger.FileName);

    private static PrivacyPlanParameters Plan(double z) => new(PrivacyMechanism.DistributedSkellam, 512, 3, 3, 32, 1.0, z, 1, 1e-5);

    private static RoundTerms Terms(long round, RecordLevelRound? work = null, bool clientLevel = true, string run = "run-1") =>
        new(run, round, NoiseMechanismKind.DistributedSkellam, 10.0, 1.0, ["q_proj"], 2, "", 3, 3, Plan(10.0))
        {
            Record = work ?? s_work,
            ClientLevel = clientLevel,
        };

    // The accountant validated against Opacus, composing every DP-SGD step of the rounds at q = 2 / 40.
    private static double Expected(int rounds)
    {
        var accountant = new RdpAccountant();
        accountant.ComposeSubsampledGaussian(s_work.SamplingRate, 1.1, 10L * rounds);
        return accountant.GetEpsilon(1e-5).Epsilon;
    }

    [Fact]
    public void ChargeBeforeUpload_TwoRoundsOfBoth_ChargesBothUnitsAndComposesTheRecordEpsilon()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);

        Assert.True(gate.ChargeBeforeUpload(Terms(1)).Accepted);
        double one = ledger.RecordSpent(1e-5, "run-1").Epsilon;
        Assert.True(gate.ChargeBeforeUpload(Terms(2)).Accepted);

        Assert.Equal(2, ledger.Charges.Count);
        Assert.Equal(2, ledger.RecordCharges.Count);
        Assert.Equal(Expected(1), one, 12);
        Assert.Equal(Expected(2), ledger.RecordSpent(1e-5, "run-1").Epsilon, 12);
        // Pinned: q = 0.05, z = 1.1, 20 steps, delta 1e-5.
        Assert.Equal(1.99817, ledger.RecordSpent(1e-5).Epsilon, 4);
    }

    [Fact]
    public void Open_AfterRestart_KeepsTheRecordChargesAndRefusesTheRoundUnderEitherUnit()
    {
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath))
        {
            Assert.True(new LocalPolicyGate(s_policy, ledger, _time).ChargeBeforeUpload(Terms(1, clientLevel: false)).Accepted);
        }

        using LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, reopened, _time);

        Assert.Empty(reopened.Charges);
        Assert.Equal(s_work, Assert.Single(reopened.RecordCharges).Work);
        Assert.Equal(Expected(1), reopened.RecordSpent(1e-5).Epsilon, 12);
        // A record-only round is still a round this machine paid for: a replay is refused whatever unit it claims.
        PolicyDecision replay = gate.ChargeBeforeUpload(Terms(1));
        Assert.Equal(LocalPolicyGate.ReplayedRoundRule, replay.Rule);
        Assert.Single(reopened.RecordCharges);
    }

    [Fact]
    public void Check_RecordPlanOverMaxRecordEpsilon_DeclinesNamingTheRuleAndChargesNothing()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MaxRecordEpsilon = Expected(1) * 0.99 }, ledger, _time);

        PolicyDecision check = gate.Check(Terms(1));
        PolicyDecision charge = gate.ChargeBeforeUpload(Terms(1));

        Assert.Equal(LocalPolicyGate.MaxRecordEpsilonRule, check.Rule);
        Assert.Equal(LocalPolicyGate.MaxRecordEpsilonRule, charge.Rule);
        Assert.Contains(LocalPolicyGate.MaxRecordEpsilonRule, LocalPolicyGate.BudgetRules);
        Assert.Empty(ledger.Charges);
        Assert.Empty(ledger.RecordCharges);
    }

    [Fact]
    public void Check_SecondRoundOverTheLifetimeCap_DeclinesWithTheLifetimeRule()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MaxRecordEpsilon = 10, MaxRecordEpsilonLifetime = (Expected(1) + Expected(2)) / 2 }, ledger, _time);

        Assert.True(gate.ChargeBeforeUpload(Terms(1, run: "run-a")).Accepted);
        PolicyDecision second = gate.ChargeBeforeUpload(Terms(1, run: "run-b"));

        Assert.Equal(LocalPolicyGate.MaxRecordEpsilonLifetimeRule, second.Rule);
        Assert.Single(ledger.RecordCharges);
        Assert.Single(ledger.Charges);
    }

    [Theory]
    [InlineData(double.NaN, 1.0, 2, "noise multiplier")]
    [InlineData(0.0, 1.0, 2, "noise multiplier")]
    [InlineData(1.1, double.PositiveInfinity, 2, "clip norm")]
    [InlineData(1.1, 0.0, 2, "clip norm")]
    [InlineData(1.1, 1.0, 41, "expected batch of 41")]
    public void Check_UnpriceableRecordPlan_DeclinesRecordParametersAndChargesNothing(double z, double c, int batch, string named)
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);

        PolicyDecision decision = gate.ChargeBeforeUpload(Terms(1, s_work with { NoiseMultiplier = z, MaxGradNorm = c, ExpectedBatch = batch }));

        Assert.Equal(LocalPolicyGate.RecordParametersRule, decision.Rule);
        Assert.Contains(named, decision.Message, StringComparison.Ordinal);
        Assert.Empty(ledger.Charges);
        Assert.Empty(ledger.RecordCharges);
    }

    [Fact]
    public void Check_RecordOnlyRoundUnderAPolicyWithoutMaxRecordEpsilon_Declined()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy with { MaxRecordEpsilon = null }, ledger, _time);

        PolicyDecision recordOnly = gate.Check(Terms(1, clientLevel: false));
        PolicyDecision both = gate.Check(Terms(1));

        Assert.Equal(LocalPolicyGate.MaxRecordEpsilonRule, recordOnly.Rule);
        Assert.True(both.Accepted, both.Message);
    }

    [Fact]
    public void ChargeBeforeUpload_RecordOnlyRound_ChargesOnlyTheRecordUnit()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);

        // A record-only round's manifest carries the central encoding; the client-level mechanism rules do not apply to it.
        PolicyDecision decision = gate.ChargeBeforeUpload(Terms(1, clientLevel: false) with { Mechanism = NoiseMechanismKind.CentralGaussian });

        Assert.True(decision.Accepted, decision.Message);
        Assert.Empty(ledger.Charges);
        Assert.Single(ledger.RecordCharges);
        Assert.Equal(0, ledger.Spent(1e-5).Epsilon, 12);
    }

    [Fact]
    public async Task LedgerShow_TextAfterRecordLevelRounds_PrintsLifetimeAndPerRunRecordEpsilon()
    {
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath))
        {
            var gate = new LocalPolicyGate(s_policy, ledger, _time);
            Assert.True(gate.ChargeBeforeUpload(Terms(1)).Accepted);
            Assert.True(gate.ChargeBeforeUpload(Terms(2)).Accepted);
        }
        string policyPath = Path.Combine(_dir, LocalPolicy.FileName);
        File.WriteAllText(policyPath, """
            {"delta": 1e-5, "max_epsilon_per_run": 100, "max_epsilon_lifetime": 1000, "min_noise_multiplier": 0.5,
             "allowed_mechanisms": ["distributed_skellam"], "allowed_target_modules": ["q_proj"], "max_rank": 16,
             "max_rounds_per_day": 100, "max_record_epsilon": 10}
            """);

        (int code, string stdout, string stderr) = await Cli.EdgeClientProcess.RunAsync("ledger", "show", "--ledger", LedgerPath, "--policy", policyPath);

        Assert.True(code == 0, stderr);
        string expected = Expected(2).ToString("0.###", System.Globalization.CultureInfo.InvariantCulture);
        // Spectre wraps to the console width: compare with the whitespace collapsed.
        string text = string.Join(' ', stdout.Split((char[])[' ', '\n', '\r', '│', '┃', '|'], StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains($"Lifetime record epsilon {expected} at delta", text, StringComparison.Ordinal);
        Assert.Contains("(record-level, add-remove), 2 DP-SGD rounds", text, StringComparison.Ordinal);
        // Once in the lifetime line and once in the run's row.
        Assert.Equal(2, text.Split(expected).Length - 1);
    }

    [Fact]
    public void ToJson_BothUnits_ReportsRecordEpsilonPerRunAndInLifetimeBesideTheClientKeys()
    {
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath);
        var gate = new LocalPolicyGate(s_policy, ledger, _time);
        gate.ChargeBeforeUpload(Terms(1));
        gate.ChargeBeforeUpload(Terms(2));

        using var json = System.Text.Json.JsonDocument.Parse(ledger.ToJson(1e-5, _time.GetUtcNow()));
        System.Text.Json.JsonElement root = json.RootElement;

        Assert.Equal(Expected(2), root.GetProperty("lifetime").GetProperty("record_epsilon").GetDouble(), 12);
        Assert.Equal(ledger.Spent(1e-5).Epsilon, root.GetProperty("lifetime").GetProperty("epsilon").GetDouble(), 12);
        System.Text.Json.JsonElement run = Assert.Single(root.GetProperty("runs").EnumerateArray());
        Assert.Equal(Expected(2), run.GetProperty("record_epsilon").GetDouble(), 12);
        Assert.Equal(2, run.GetProperty("rounds").GetInt32());
        Assert.Equal("record", root.GetProperty("record_privacy_unit").GetString());
        Assert.Equal(2, root.GetProperty("record_charges").GetArrayLength());
    }
}
