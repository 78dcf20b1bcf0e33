using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The coordinator's command tree; each command lives in its own file under Cli/.</summary>
internal static class CoordinatorCommands
{
    public static void Configure(IConfigurator config)
    {
        config.AddCommand<VersionCommand>("version").WithDescription("Print the coordinator's version.");
    }
}
