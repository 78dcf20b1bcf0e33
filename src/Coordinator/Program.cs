using Federated.Cli;
using Federated.Coordinator.Cli;
using Federated.Simulation;

namespace Federated.Coordinator;

internal static class Program
{
    public static Task<int> Main(string[] args) =>
        CliRunner.RunAsync("coordinator", config => { CoordinatorCommands.Configure(config); SimulationCommands.Configure(config); }, args);
}
