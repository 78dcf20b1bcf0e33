using System.Text.Json;
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
    private static async Task<(int Code, string Out, string Err)> RunAsync(params string[] args)
    {
        TextWriter originalOut = Console.Out, originalErr = Console.Error;
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int code = await CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args);
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(originalOut);
            Console.SetError(originalErr);
        }
    }

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
    [InlineData("--epsilon", "0", "--epsilon must be > 0")]
    [InlineData("--epsilon", "x", "--epsilon must be a number > 0")]
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
}
