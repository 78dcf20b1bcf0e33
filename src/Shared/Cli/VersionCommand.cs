using System.ComponentModel;
using System.Reflection;
using System.Text.Json;
using Spectre.Console.Cli;

namespace Federated.Cli;

/// <summary>Prints the product version, for operators and scripts.</summary>
public sealed class VersionCommand : Command<VersionCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--json")]
        [Description("Print the version as one JSON object.")]
        public bool Json { get; init; }
    }

    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        string name = Assembly.GetEntryAssembly()?.GetName().Name ?? "federated";
        string version = typeof(VersionCommand).Assembly
            .GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
        Console.WriteLine(settings.Json ? JsonSerializer.Serialize(new { version }) : $"{name} {version}");
        return CliRunner.Ok;
    }
}
