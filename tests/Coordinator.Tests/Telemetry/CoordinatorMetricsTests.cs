using Federated.Coordinator.Telemetry;

namespace Federated.Coordinator.Tests.Telemetry;

public sealed class CoordinatorMetricsTests
{
    [Theory]
    [InlineData("allowed_target_modules", "allowed_target_modules")]
    [InlineData("max_epsilon_per_run", "max_epsilon_per_run")]
    [InlineData("", "unnamed")]
    [InlineData("Robert'); DROP TABLE", "other")]
    [InlineData("alice@hospital.example", "other")]
    [InlineData("rule_with_a_name_much_longer_than_any_policy_key_has", "other")]
    public void RuleLabel_PolicyKeysPassAnythingElseFromTheNetworkIsOther(string rule, string expected) =>
        Assert.Equal(expected, CoordinatorMetrics.RuleLabel(rule));
}
