using Federated.Cli;
using Federated.EdgeClient.Cli;

namespace Federated.EdgeClient;

internal static class Program
{
    public static Task<int> Main(string[] args) => CliRunner.RunAsync("edge-client", EdgeClientCommands.Configure, args);
}
