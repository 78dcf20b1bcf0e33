using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.Cli;

namespace Federated.Coordinator.Tests.Cli;

/// <summary>Tests that swap Console.Out/Error must not run beside each other.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleCollection
{
    public const string Name = "Console";
}

[Collection(ConsoleCollection.Name)]
public sealed class PrivacyCommandTests
{
    private static Task<(int Code, string Out, string Err)> RunAsync(params string[] args) => CoordinatorCli.RunCapturedAsync(args);

    [Fact]
    public async Task Epsilon_OpacusCaseJson_PrintsKeysAndOpacusEpsilon()
    {
        // Opacus accountants_test.py test_rdp_accountant: z 1.5, q 0.04, 2250 steps, delta 1e-5 -> 7.32911117143.
        var (code, output, error) = await RunAsync("privacy", "epsilon", "--noise-multiplier", "1.5", "--sampling-rate", "0.04",
            "--rounds", "2250", "--delta", "1e-5", "--json");
        Assert.Equal(0, code);
        Assert.Equal("", error);
        using JsonDocument json = JsonDocument.Parse(output);
        JsonElement root = json.RootElement;
        Assert.Equal("rdp", root.GetProperty("accountant").GetString());
        Assert.Equal(7.32911117143, root.GetProperty("epsilon").GetDouble(), 1e-6);
        Assert.Equal(1e-5, root.GetProperty("delta").GetDouble());
        Assert.Equal(1.5, root.GetProperty("noise_multiplier").GetDouble());
        Assert.Equal(0.04, root.GetProperty("sampling_rate").GetDouble());
        Assert.Equal(2250, root.GetProperty("rounds").GetInt64());
        Assert.True(root.GetProperty("order").GetDouble() > 1);
    }

    [Fact]
    public async Task Epsilon_PldJson_IsBelowRdpAndHasNoOrder()
    {
        var (code, output, _) = await RunAsync("privacy", "epsilon", "--noise-multiplier", "1.5", "--sampling-rate", "0.04",
            "--rounds", "2250", "--delta", "1e-5", "--accountant", "pld", "--json");
        Assert.Equal(0, code);
        using JsonDocument json = JsonDocument.Parse(output);
        Assert.Equal("pld", json.RootElement.GetProperty("accountant").GetString());
        double eps = json.RootElement.GetProperty("epsilon").GetDouble();
        Assert.InRange(eps, 5.0, 7.32911117143);
        Assert.False(json.RootElement.TryGetProperty("order", out _));
    }

    [Fact]
    public async Task Epsilon_HumanOutput_NamesEpsilonAndOrder()
    {
        var (code, output, _) = await RunAsync("privacy", "epsilon", "--noise-multiplier", "1.5", "--sampling-rate", "0.04",
            "--rounds", "2250", "--delta", "1e-5");
        Assert.Equal(0, code);
        Assert.Contains("epsilon = 7.329111", output);
        Assert.Contains("best order", output);
    }

    [Fact]
    public async Task Noise_OpacusStepsCase_ReturnsNoiseMeetingTarget()
    {
        // Opacus accountants_test.py test_get_noise_multiplier_rdp_steps: epsilon 8, q 0.04, 2000 steps -> 1.3562.
        var (code, output, error) = await RunAsync("privacy", "noise", "--epsilon", "8", "--delta", "1e-5", "--sampling-rate", "0.04",
            "--rounds", "2000", "--json");
        Assert.Equal(0, code);
        Assert.Equal("", error);
        using JsonDocument json = JsonDocument.Parse(output);
        double z = json.RootElement.GetProperty("noise_multiplier").GetDouble();
        Assert.InRange(z, 1.3462, 1.35625);
        Assert.InRange(json.RootElement.GetProperty("epsilon").GetDouble(), 7.99, 8.0);
        Assert.Equal("rdp", json.RootElement.GetProperty("accountant").GetString());
        Assert.Equal(2000, json.RootElement.GetProperty("rounds").GetInt64());
        Assert.True(json.RootElement.TryGetProperty("order", out _));
    }

    [Theory]
    [InlineData("--noise-multiplier", "0", "--noise-multiplier must be > 0")]
    [InlineData("--noise-multiplier", "-1", "--noise-multiplier must be > 0")]
    [InlineData("--noise-multiplier", "abc", "--noise-multiplier must be a number > 0")]
    [InlineData("--sampling-rate", "1.5", "--sampling-rate must be in (0, 1]")]
    [InlineData("--sampling-rate", "0", "--sampling-rate must be in (0, 1]")]
    [InlineData("--delta", "1", "--delta must be in (0, 1)")]
    [InlineData("--delta", "0", "--delta must be in (0, 1)")]
    [InlineData("--rounds", "0", "--rounds must be an integer >= 1")]
    [InlineData("--rounds", "2.5", "--rounds must be an integer >= 1")]
    [InlineData("--accountant", "xyz", "--accountant must be rdp or pld")]
    public async Task Epsilon_BadValue_ExitsTwoWithOneLineNamingFlagAndRange(string flag, string value, string expected)
    {
        var args = new Dictionary<string, string>
        {
            ["--noise-multiplier"] = "1.0",
            ["--sampling-rate"] = "0.1",
            ["--rounds"] = "10",
            ["--delta"] = "1e-5",
        };
        args[flag] = value;
        var argv = new List<string> { "privacy", "epsilon" };
        foreach (var (k, v) in args)
        {
            argv.Add(k);
            argv.Add(v);
        }
        var (code, output, error) = await RunAsync(argv.ToArray());
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(expected, error);
        Assert.Single(error.TrimEnd().Split('\n'));
    }

    [Fact]
    public async Task Epsilon_PldWithTinyNoise_ExitsTwoSuggestingRdp()
    {
        var (code, _, error) = await RunAsync("privacy", "epsilon", "--noise-multiplier", "0.005", "--sampling-rate", "0.1",
            "--rounds", "2", "--delta", "1e-5", "--accountant", "pld");
        Assert.Equal(2, code);
        Assert.Contains("--accountant rdp", error);
    }

    [Theory]
    [InlineData("--noise-multiplier")]
    [InlineData("--sampling-rate")]
    [InlineData("--rounds")]
    [InlineData("--delta")]
    public async Task Epsilon_MissingFlag_ExitsTwoNamingTheFlag(string missing)
    {
        var argv = new List<string> { "privacy", "epsilon" };
        foreach (var (k, v) in new[] { ("--noise-multiplier", "1"), ("--sampling-rate", "0.1"), ("--rounds", "10"), ("--delta", "1e-5") })
        {
            if (k != missing)
            {
                argv.Add(k);
                argv.Add(v);
            }
        }
        var (code, _, error) = await RunAsync(argv.ToArray());
        Assert.Equal(2, code);
        Assert.Contains($"{missing} is required", error);
    }

    [Theory]
    [InlineData("--epsilon", "0", "--target-epsilon must be > 0")]
    [InlineData("--epsilon", "x", "--target-epsilon must be a number > 0")]
    [InlineData("--delta", "2", "--delta must be in (0, 1)")]
    [InlineData("--sampling-rate", "-0.1", "--sampling-rate must be in (0, 1]")]
    [InlineData("--rounds", "ten", "--rounds must be an integer >= 1")]
    public async Task Noise_BadValue_ExitsTwoNamingFlagAndRange(string flag, string value, string expected)
    {
        var args = new Dictionary<string, string>
        {
            ["--epsilon"] = "2",
            ["--delta"] = "1e-5",
            ["--sampling-rate"] = "0.1",
            ["--rounds"] = "10",
        };
        args[flag] = value;
        var argv = new List<string> { "privacy", "noise" };
        foreach (var (k, v) in args)
        {
            argv.Add(k);
            argv.Add(v);
        }
        var (code, _, error) = await RunAsync(argv.ToArray());
        Assert.Equal(2, code);
        Assert.Contains(expected, error);
    }

    // The first worked plan of PrivacyPlanTests: d 65536, n 10, t 7, z 1, 100 rounds, delta 1e-6 (independent Python values).
    private static readonly string[] s_distributed =
    [
        "--mechanism", "distributed", "--dimension", "65536", "--clients", "10", "--threshold", "7", "--bits", "32", "--clip-norm", "1",
        "--rounds", "100", "--delta", "1e-6",
    ];

    [Fact]
    public async Task Epsilon_MechanismDistributedJson_IsThePlansPriceWithItsCalibration()
    {
        var (code, output, error) = await RunAsync(["privacy", "epsilon", .. s_distributed, "--noise-multiplier", "1", "--json"]);

        Assert.Equal(0, code);
        Assert.Equal("", error);
        using JsonDocument json = JsonDocument.Parse(output);
        JsonElement root = json.RootElement;
        foreach (string key in new[] { "accountant", "epsilon", "delta", "noise_multiplier", "sampling_rate", "rounds", "order" })
        {
            Assert.True(root.TryGetProperty(key, out _), key);
        }
        Assert.Equal(("distributed_skellam", "client", "replace-one"), (root.GetProperty("mechanism").GetString(), root.GetProperty("privacy_unit").GetString(),
            root.GetProperty("adjacency").GetString()));
        Assert.Equal(412.42921619684455, root.GetProperty("epsilon").GetDouble(), 412.43 * 1e-9);
        Assert.Equal(37416573.36750434, root.GetProperty("scale").GetDouble(), 37416573.4 * 1e-9);
        Assert.Equal(19157285820.275192, root.GetProperty("l1_sensitivity").GetDouble(), 19157285820.3 * 1e-9);
        Assert.Equal(74833147.73544997, root.GetProperty("l2_sensitivity").GetDouble(), 74833147.7 * 1e-9);
        Assert.Equal(1399999999998920.2, root.GetProperty("noise_variance").GetDouble(), 1.4e15 * 1e-9);
        Assert.Equal(1.0, root.GetProperty("priced_sampling_rate").GetDouble());
        Assert.Equal(Math.Ceiling(root.GetProperty("order").GetDouble()), root.GetProperty("order").GetDouble());
    }

    [Fact]
    public async Task Epsilon_MechanismHumanOutput_NamesUnitRelationAndCalibration()
    {
        var (code, output, _) = await RunAsync(["privacy", "epsilon", .. s_distributed, "--noise-multiplier", "1"]);

        Assert.Equal(0, code);
        Assert.StartsWith("epsilon = 412.429216 at delta = 1E-06 (rdp, best order ", output, StringComparison.Ordinal);
        Assert.Contains("distributed_skellam, client-level, replace-one, no amplification", output, StringComparison.Ordinal);
        Assert.Contains("calibrated plan (integer units): scale 37416573.4", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Noise_MechanismCentral_SmallestNoiseMeetingTheTargetOfThatPlan()
    {
        string[] central = ["--mechanism", "central", "--dimension", "4096", "--clients", "20", "--threshold", "2", "--rounds", "50", "--delta", "1e-5"];

        var (code, output, error) = await RunAsync(["privacy", "noise", .. central, "--epsilon", "10", "--json"]);

        Assert.True(code == 0, error);
        using JsonDocument json = JsonDocument.Parse(output);
        double z = json.RootElement.GetProperty("noise_multiplier").GetDouble();
        Assert.Equal("central_gaussian", json.RootElement.GetProperty("mechanism").GetString());
        var parameters = new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, 4096, 20, 2, 32, 1.0, z, 50, 1e-5);
        Assert.Equal(PrivacyPlan.Create(parameters).Epsilon.Epsilon, json.RootElement.GetProperty("epsilon").GetDouble(), 1e-12);
        Assert.InRange(json.RootElement.GetProperty("epsilon").GetDouble(), 9.9, 10);
        Assert.True(PrivacyPlan.Create(parameters with { NoiseMultiplier = z * (1 - 1e-4) }).Epsilon.Epsilon > 10);
    }

    [Fact]
    public async Task Noise_RunStartNames_SameAnswerAsTheOldSpellings()
    {
        string[] common = ["privacy", "noise", "--mechanism", "central", "--dimension", "4096", "--rounds", "50", "--delta", "1e-5", "--json"];

        var (newCode, newOutput, newError) = await RunAsync([.. common, "--clients-per-round", "20", "--min-survivors", "2", "--target-epsilon", "10"]);
        var (oldCode, oldOutput, _) = await RunAsync([.. common, "--clients", "20", "--threshold", "2", "--epsilon", "10"]);

        Assert.True(newCode == 0, newError);
        Assert.Equal(0, oldCode);
        Assert.Equal(oldOutput, newOutput);
        using JsonDocument json = JsonDocument.Parse(newOutput);
        Assert.Equal(20, json.RootElement.GetProperty("clients").GetInt32());
        Assert.Equal(2, json.RootElement.GetProperty("threshold").GetInt32());
    }

    [Theory]
    [InlineData("--dimension", "0", "--dimension 0 is invalid: use 1..2^28")]
    [InlineData("--dimension", "many", "--dimension must be an integer")]
    [InlineData("--threshold", "20", "--min-survivors 20 is invalid: use 1..clients (10)")]
    [InlineData("--bits", "8", "--bits 8 is invalid: use 16..32")]
    [InlineData("--clip-norm", "-1", "--clip-norm must be > 0")]
    [InlineData("--mechanism", "local", "--mechanism must be distributed or central")]
    [InlineData("--accountant", "pld", "--accountant pld cannot price --mechanism plans")]
    public async Task Epsilon_MechanismBadValue_ExitsTwoNamingFlagValueAndRange(string flag, string value, string expected)
    {
        var args = new List<string> { "privacy", "epsilon", "--noise-multiplier", "1" };
        for (int i = 0; i < s_distributed.Length; i += 2)
        {
            args.Add(s_distributed[i]);
            args.Add(s_distributed[i] == flag ? value : s_distributed[i + 1]);
        }
        if (!s_distributed.Contains(flag))
        {
            args.Add(flag);
            args.Add(value);
        }

        var (code, output, error) = await RunAsync([.. args]);

        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains(expected, error, StringComparison.Ordinal);
        Assert.Single(error.TrimEnd().Split('\n'));
    }

    [Fact]
    public async Task Epsilon_RingTooSmallForThePlan_ExitsTwoNamingBitsAndTheSmallestThatFits()
    {
        var (code, _, error) = await RunAsync("privacy", "epsilon", "--mechanism", "distributed", "--dimension", "268435456", "--clients", "1000", "--threshold", "10",
            "--bits", "16", "--noise-multiplier", "1", "--rounds", "10", "--delta", "1e-5");

        Assert.Equal(2, code);
        Assert.Contains("--bits 16 is invalid: a 16-bit ring cannot hold the rounding and noise of 1000 clients at dimension 268435456; use bits >= ", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Epsilon_MechanismWithoutDimension_ExitsTwoSayingItIsRequired()
    {
        var (code, _, error) = await RunAsync("privacy", "epsilon", "--mechanism", "distributed", "--clients", "10", "--noise-multiplier", "1", "--rounds", "10", "--delta", "1e-5");

        Assert.Equal(2, code);
        Assert.Contains("--dimension is required with --mechanism", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Epsilon_PlanFlagWithoutMechanism_ExitsTwoAskingForIt()
    {
        var (code, _, error) = await RunAsync("privacy", "epsilon", "--dimension", "1024", "--noise-multiplier", "1", "--sampling-rate", "0.1", "--rounds", "10", "--delta", "1e-5");

        Assert.Equal(2, code);
        Assert.Contains("--dimension needs --mechanism distributed|central", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Epsilon_WithoutMechanism_StatesTheRecordUnitOfTheSubsampledGaussian()
    {
        var (code, output, _) = await RunAsync("privacy", "epsilon", "--noise-multiplier", "1.5", "--sampling-rate", "0.04", "--rounds", "2250", "--delta", "1e-5", "--json");

        Assert.Equal(0, code);
        using JsonDocument json = JsonDocument.Parse(output);
        Assert.Equal(("subsampled_gaussian", "record", "add-remove"), (json.RootElement.GetProperty("mechanism").GetString(),
            json.RootElement.GetProperty("privacy_unit").GetString(), json.RootElement.GetProperty("adjacency").GetString()));
    }
}
