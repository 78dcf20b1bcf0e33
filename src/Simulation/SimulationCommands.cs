using Spectre.Console.Cli;

namespace Federated.Simulation;

/// <summary>The `simulate` command, added to the coordinator's command tree by the executable.</summary>
public static class SimulationCommands
{
    public static void Configure(IConfigurator config) =>
        config.AddCommand<SimulateCommand>("simulate").WithDescription("Run a whole federation on this machine: coordinator, edge clients, DP rounds, signed export.");
}
