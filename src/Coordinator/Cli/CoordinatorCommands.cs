using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The coordinator's command tree; each command lives in its own file under Cli/.</summary>
internal static class CoordinatorCommands
{
    public static void Configure(IConfigurator config)
    {
        config.AddCommand<VersionCommand>("version").WithDescription("Print the coordinator's version.");
        config.AddBranch("privacy", privacy =>
        {
            privacy.SetDescription("Privacy officer's calculator: epsilon for a plan, noise for a target.");
            privacy.AddCommand<PrivacyEpsilonCommand>("epsilon").WithDescription("Epsilon after T rounds of the subsampled Gaussian.");
            privacy.AddCommand<PrivacyNoiseCommand>("noise").WithDescription("Smallest noise multiplier for a target epsilon.");
        });
    }
}
