using Federated.Coordinator.Cli;

namespace Federated.Coordinator;

internal static class Program
{
    public static Task<int> Main(string[] args) => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, args);
}
