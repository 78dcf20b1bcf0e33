using System.Text.Json;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Tests.Cli;

namespace Federated.EdgeClient.Tests.Policy;

public sealed class LocalPolicyTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("local-policy-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Load_DocumentedExample_Loads()
    {
        LocalPolicy policy = LocalPolicy.Load(Path.Combine(AppContext.BaseDirectory, "Policy", "policy.example.json"));

        Assert.Equal(1e-6, policy.Delta);
        Assert.Equal([NoiseMechanismKind.DistributedSkellam, NoiseMechanismKind.DistributedDiscreteGaussian], policy.AllowedMechanisms);
        Assert.Null(policy.CoordinatorCertificateSha256);
        Assert.Equal((6.0, 40.0, 100.0, 2), (policy.MaxEpsilonPer30Days, policy.MaxWorstCaseEpsilonPerRun, policy.MaxWorstCaseEpsilonLifetime, policy.MinThreshold));
        Assert.Equal((3.0, 8.0), (policy.MaxRecordEpsilon, policy.MaxRecordEpsilonLifetime));
    }

    [Theory]
    [InlineData("\"delta\": 0", "delta = 0 is outside (0, 0.1]")]
    [InlineData("\"max_rank\": 8.5", "max_rank = 8.5 must be a whole number")]
    [InlineData("\"max_epsilon_per_run\": 20", "max_epsilon_per_run (20) exceeds max_epsilon_lifetime (10)")]
    [InlineData("\"allowed_mechanisms\": [\"laplace\"]", "allowed_mechanisms has unknown 'laplace'")]
    [InlineData("\"allowed_target_modules\": [\"lm_head\"]", "allowed_target_modules has unknown 'lm_head'")]
    [InlineData("\"coordinator_certificate_sha256\": \"abc\"", "coordinator_certificate_sha256 must be 64 hex digits")]
    [InlineData("\"max_epsilon\": 3", "max_epsilon")]
    [InlineData("\"min_threshold\": 1", "min_threshold = 1 is outside [2, 1000000]")]
    [InlineData("\"max_epsilon_per_30_days\": 0", "max_epsilon_per_30_days = 0 is outside (0, 1000]")]
    [InlineData("\"max_worst_case_epsilon_per_run\": -1", "max_worst_case_epsilon_per_run = -1 is outside (0, 10000]")]
    [InlineData("\"max_record_epsilon\": 0", "max_record_epsilon = 0 is outside (0, 1000]")]
    [InlineData("\"max_record_epsilon_lifetime\": -2", "max_record_epsilon_lifetime = -2 is outside (0, 100000]")]
    public void Load_BadValue_NamesTheKey(string replacement, string expected)
    {
        string path = WritePolicy(replacement);

        var ex = Assert.Throws<PolicyFileException>(() => LocalPolicy.Load(path));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_UnknownKeyOrMissingComma_NamesFileLineColumnAndKeyWithoutTypeNames()
    {
        string path = Path.Combine(_dir, "policy.json");
        File.WriteAllText(path, "{\n  \"delta\": 1e-6,\n  \"max_epsilon_pr_run\": 4\n}");
        var typo = Assert.Throws<PolicyFileException>(() => LocalPolicy.Load(path));
        File.WriteAllText(path, "{\n  \"delta\": 1e-6\n  \"max_epsilon_per_run\": 4\n}");
        var comma = Assert.Throws<PolicyFileException>(() => LocalPolicy.Load(path));

        Assert.StartsWith($"{path}:3:", typo.Message, StringComparison.Ordinal);
        Assert.Contains("unknown key 'max_epsilon_pr_run'; the keys are delta, max_epsilon_per_run", typo.Message, StringComparison.Ordinal);
        Assert.StartsWith($"{path}:3:3: ", comma.Message, StringComparison.Ordinal);
        foreach (string message in new[] { typo.Message, comma.Message })
        {
            Assert.DoesNotContain(".NET", message, StringComparison.Ordinal);
            Assert.DoesNotContain("LineNumber", message, StringComparison.Ordinal);
            Assert.DoesNotContain("Federated.", message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Load_OptionalCaps_AreReadAndDefaultToNone()
    {
        LocalPolicy none = LocalPolicy.Load(WritePolicy(null));
        Assert.Equal((null, null, null, 2), (none.MaxEpsilonPer30Days, none.MaxWorstCaseEpsilonPerRun, none.MaxWorstCaseEpsilonLifetime, none.MinThreshold));

        string path = WritePolicy("\"max_epsilon_per_30_days\": 6");
        File.WriteAllText(path, File.ReadAllText(path).TrimEnd('}')
            + ", \"max_worst_case_epsilon_per_run\": 20, \"max_worst_case_epsilon_lifetime\": 50, \"min_threshold\": 3}");
        LocalPolicy all = LocalPolicy.Load(path);

        Assert.Equal((6.0, 20.0, 50.0, 3), (all.MaxEpsilonPer30Days, all.MaxWorstCaseEpsilonPerRun, all.MaxWorstCaseEpsilonLifetime, all.MinThreshold));
    }

    [Fact]
    public void Load_RecordEpsilonCaps_AreReadDefaultToNoneAndPerRunMayNotExceedLifetime()
    {
        LocalPolicy none = LocalPolicy.Load(WritePolicy(null));
        Assert.Equal((null, null), (none.MaxRecordEpsilon, none.MaxRecordEpsilonLifetime));

        string path = WritePolicy("\"max_record_epsilon\": 3");
        File.WriteAllText(path, File.ReadAllText(path).TrimEnd('}') + ", \"max_record_epsilon_lifetime\": 8}");
        LocalPolicy both = LocalPolicy.Load(path);
        Assert.Equal((3.0, 8.0), (both.MaxRecordEpsilon, both.MaxRecordEpsilonLifetime));

        File.WriteAllText(path, File.ReadAllText(path).Replace("\"max_record_epsilon\": 3", "\"max_record_epsilon\": 9", StringComparison.Ordinal));
        var ex = Assert.Throws<PolicyFileException>(() => LocalPolicy.Load(path));
        Assert.Contains("max_record_epsilon (9) exceeds max_record_epsilon_lifetime (8)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_Phi3FusedTargetModules_AreAllowed()
    {
        string path = WritePolicy("\"allowed_target_modules\": [\"qkv_proj\", \"o_proj\", \"gate_up_proj\"]");

        LocalPolicy policy = LocalPolicy.Load(path);

        Assert.Equal(["qkv_proj", "o_proj", "gate_up_proj"], policy.AllowedTargetModules);
    }

    [Fact]
    public void Load_MissingKey_SaysItIsRequired()
    {
        string path = Path.Combine(_dir, "policy.json");
        File.WriteAllText(path, """{"delta": 1e-6}""");

        var ex = Assert.Throws<PolicyFileException>(() => LocalPolicy.Load(path));

        Assert.Contains("max_epsilon_per_run is required", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LedgerShow_AfterCharges_PrintsEpsilonPerRun()
    {
        string policyPath = WritePolicy(null);
        string ledgerPath = Path.Combine(_dir, LocalPrivacyLedger.FileName);
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(ledgerPath))
        {
            var gate = new LocalPolicyGate(LocalPolicy.Load(policyPath), ledger, TimeProvider.System);
            for (int round = 1; round <= 3; round++)
            {
                Assert.True(gate.ChargeBeforeUpload(new RoundTerms("run-7", round, NoiseMechanismKind.DistributedSkellam, 8.0, 1.0, ["q_proj"], 8, "", 3, 2)).Accepted);
            }
            Assert.True(gate.ChargeBeforeUpload(new RoundTerms("run-8", 1, NoiseMechanismKind.DistributedSkellam, 8.0, 1.0, ["q_proj"], 8, "", 5, 4,
                new Aggregation.Privacy.PrivacyPlanParameters(Aggregation.Privacy.PrivacyMechanism.DistributedSkellam, 512, 5, 4, 32, 1.0, 8.0, 1, 1e-5))).Accepted);
        }

        (int code, string stdout, string stderr) = await EdgeClientProcess.RunAsync("ledger", "show", "--ledger", ledgerPath, "--policy", policyPath, "--json");

        Assert.True(code == 0, stderr);
        using JsonDocument json = JsonDocument.Parse(stdout);
        JsonElement run = json.RootElement.GetProperty("runs")[0];
        Assert.Equal("run-7", run.GetProperty("run_id").GetString());
        Assert.Equal(3, run.GetProperty("rounds").GetInt32());
        Assert.True(run.GetProperty("epsilon").GetDouble() > 0);
        Assert.Equal(("client", "replace-one"), (json.RootElement.GetProperty("privacy_unit").GetString(), json.RootElement.GetProperty("adjacency").GetString()));
        JsonElement charges = json.RootElement.GetProperty("charges");
        Assert.Equal(4, charges.GetArrayLength());
        Assert.Equal(JsonValueKind.Null, charges[0].GetProperty("skellam").ValueKind);
        Assert.Equal(512, charges[3].GetProperty("skellam").GetProperty("dimension").GetInt32());
        Assert.Equal(4, charges[3].GetProperty("skellam").GetProperty("min_clients").GetInt32());
        // Worst case (own noise share alone): unbounded (null) for rows without their plan, the own-share price for a plan.
        Assert.Equal(JsonValueKind.Null, run.GetProperty("worst_case_epsilon").ValueKind);
        Assert.Equal(JsonValueKind.Null, json.RootElement.GetProperty("lifetime").GetProperty("worst_case_epsilon").ValueKind);
        JsonElement planned = json.RootElement.GetProperty("runs")[1];
        Assert.Equal(1, planned.GetProperty("last_round").GetInt64());
        var plan = Aggregation.Privacy.PrivacyPlan.Create(new Aggregation.Privacy.PrivacyPlanParameters(Aggregation.Privacy.PrivacyMechanism.DistributedSkellam, 512, 5, 4, 32, 1.0, 8.0, 1, 1e-6));
        double ownShare = Aggregation.Privacy.RdpAnalysis.Epsilon(plan.Orders, plan.OwnShareRoundRdp()!, 1e-6).Epsilon;
        Assert.Equal(ownShare, planned.GetProperty("worst_case_epsilon").GetDouble(), 9);
        Assert.Equal(plan.Epsilon.Epsilon, planned.GetProperty("epsilon").GetDouble(), 9);
        Assert.True(ownShare > plan.Epsilon.Epsilon);
        Assert.Equal(json.RootElement.GetProperty("epsilon_lifetime").GetDouble(), json.RootElement.GetProperty("lifetime").GetProperty("epsilon").GetDouble());
    }

    [Fact]
    public async Task LedgerShow_Identity_ReadsTheLedgerAndPolicyBesideItAsRunDoes()
    {
        string home = Directory.CreateDirectory(Path.Combine(_dir, "home")).FullName;
        File.Copy(WritePolicy(null), Path.Combine(home, LocalPolicy.FileName));
        File.WriteAllText(Path.Combine(home, "alice.pfx"), "not read by ledger show");
        using (LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(Path.Combine(home, LocalPrivacyLedger.FileName)))
        {
            var gate = new LocalPolicyGate(LocalPolicy.Load(Path.Combine(home, LocalPolicy.FileName)), ledger, TimeProvider.System);
            Assert.True(gate.ChargeBeforeUpload(new RoundTerms("run-9", 1, NoiseMechanismKind.DistributedSkellam, 8.0, 1.0, ["q_proj"], 8, "", 3, 2)).Accepted);
        }

        (int code, string stdout, string stderr) = await EdgeClientProcess.RunAsync("ledger", "show", "--identity", Path.Combine(home, "alice.pfx"), "--json");
        (int missing, _, string missingErr) = await EdgeClientProcess.RunAsync("ledger", "show", "--identity", Path.Combine(_dir, "nobody.pfx"));

        Assert.True(code == 0, stderr);
        using JsonDocument json = JsonDocument.Parse(stdout);
        Assert.Equal("run-9", json.RootElement.GetProperty("runs")[0].GetProperty("run_id").GetString());
        Assert.Equal(2, missing);
        Assert.Contains("--identity", missingErr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LedgerShow_NoLedger_ExitsTwo()
    {
        (int code, _, string stderr) = await EdgeClientProcess.RunAsync("ledger", "show", "--ledger", Path.Combine(_dir, "none.db"), "--policy", WritePolicy(null));

        Assert.Equal(2, code);
        Assert.Contains("--ledger", stderr, StringComparison.Ordinal);
    }

    private string WritePolicy(string? replacement)
    {
        var values = new Dictionary<string, string>
        {
            ["delta"] = "1e-6",
            ["max_epsilon_per_run"] = "4",
            ["max_epsilon_lifetime"] = "10",
            ["min_noise_multiplier"] = "0.8",
            ["allowed_mechanisms"] = "[\"distributed_skellam\"]",
            ["allowed_target_modules"] = "[\"q_proj\", \"v_proj\"]",
            ["max_rank"] = "16",
            ["max_rounds_per_day"] = "24",
        };
        if (replacement is not null)
        {
            string key = replacement.Split(':')[0].Trim().Trim('"');
            values[key] = replacement[(replacement.IndexOf(':') + 1)..].Trim();
        }
        string path = Path.Combine(_dir, "policy.json");
        File.WriteAllText(path, "{" + string.Join(", ", values.Select(kv => $"\"{kv.Key}\": {kv.Value}")) + "}");
        return path;
    }
}
