using System.ComponentModel;
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Federated.Coordinator.Cli;
using Federated.EdgeClient.Cli;
using Federated.Simulation;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Issue 19's "help that helps": the command tree of each executable, configured as its Program.cs does, is read from
/// Spectre's own model (`cli xmldoc`), and every command's `--help` is run: each option and argument has a description,
/// the help shows it, a [DefaultValue] is shown, and a default set in code is named in the description.
/// </summary>
public sealed class CommandHelpTests
{
    /// <summary>The trees exactly as src/Coordinator/Program.cs and src/EdgeClient/Program.cs configure them.</summary>
    private static readonly Dictionary<string, Action<IConfigurator>> s_executables = new(StringComparer.Ordinal)
    {
        ["coordinator"] = config => { CoordinatorCommands.Configure(config); SimulationCommands.Configure(config); },
        ["edge-client"] = EdgeClientCommands.Configure,
    };

    [Theory]
    [InlineData("coordinator")]
    [InlineData("edge-client")]
    public async Task Help_EveryCommand_EveryOptionDescribedWithItsDefault(string executable)
    {
        (int commands, List<string> problems) = await ProblemsAsync(executable, s_executables[executable]);

        Assert.True(commands >= (executable == "coordinator" ? 19 : 9), $"{commands} commands found");
        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }

    [Fact]
    public async Task Help_OptionWithoutDescriptionOrWithUnstatedDefault_Reported()
    {
        // The check must catch the mistakes it exists for: an option added with no [Description], and a default set in
        // code that the description does not state.
        (int commands, List<string> problems) = await ProblemsAsync("undescribed", config => config.AddCommand<UndescribedCommand>("try"));

        Assert.Equal(1, commands);
        Assert.Equal(
            ["undescribed try --port: starts as '7000' but neither [DefaultValue] nor its description says so", "undescribed try --undescribed: no description"],
            problems.Order(StringComparer.Ordinal));
    }

    /// <summary>Every command of a tree (from `cli xmldoc`) with its `--help`: what is missing or untrue, one line each.</summary>
    private static async Task<(int Commands, List<string> Problems)> ProblemsAsync(string executable, Action<IConfigurator> configure)
    {
        (int code, string xml) = await RunAsync(executable, configure, "cli", "xmldoc");
        Assert.Equal(0, code);
        Command[] commands = [.. Commands(XDocument.Parse(xml).Root!, [])];
        var problems = new List<string>();
        foreach (Command command in commands)
        {
            string name = $"{executable} {string.Join(' ', command.Path)}";
            (int helpCode, string help) = await RunAsync(executable, configure, [.. command.Path, "--help"]);
            if (helpCode != 0)
            {
                problems.Add($"{name} --help exited {helpCode}");
                continue;
            }
            Type? settings = SettingsType(command.Settings);
            if (settings is null)
            {
                problems.Add($"{name}: settings type {command.Settings} not found");
                continue;
            }
            object defaults = Activator.CreateInstance(settings)!;
            foreach (Parameter parameter in command.Parameters)
            {
                string label = $"{name} {parameter.Label}";
                if (string.IsNullOrWhiteSpace(parameter.Description))
                {
                    problems.Add($"{label}: no description");
                    continue;
                }
                string? line = HelpLine(help, parameter);
                if (line is null)
                {
                    problems.Add($"{label}: not listed by --help");
                    continue;
                }
                string description = Markup.Remove(parameter.Description);
                // Spectre drops a description's final full stop.
                string opening = string.Join(' ', description.Split(' ', StringSplitOptions.RemoveEmptyEntries).Take(4)).TrimEnd('.');
                if (!Normalize(line).Contains(opening, StringComparison.Ordinal))
                {
                    problems.Add($"{label}: --help does not show its description ('{opening}...')");
                }
                if (parameter.Property is not { } propertyName || settings.GetProperty(propertyName) is not { } property)
                {
                    continue;
                }
                object? initial = property.GetValue(defaults);
                if (property.GetCustomAttribute<DefaultValueAttribute>() is { } shown)
                {
                    string value = Convert.ToString(shown.Value, CultureInfo.InvariantCulture) ?? "";
                    if (!line.Contains(value, StringComparison.Ordinal))
                    {
                        problems.Add($"{label}: --help does not show its default {value}");
                    }
                    if (initial is not null && !IsTypeDefault(initial) && !Equals(initial, shown.Value))
                    {
                        problems.Add($"{label}: [DefaultValue({value})] but the property starts as {initial}");
                    }
                }
                else if (initial is not null && !IsTypeDefault(initial))
                {
                    // A default set in code is invisible to Spectre: the description must name it.
                    string value = initial is string[] many ? string.Join(',', many) : Convert.ToString(initial, CultureInfo.InvariantCulture) ?? "";
                    if (!description.Contains("default", StringComparison.OrdinalIgnoreCase) || !description.Contains(value, StringComparison.Ordinal))
                    {
                        problems.Add($"{label}: starts as '{value}' but neither [DefaultValue] nor its description says so");
                    }
                }
            }
        }
        return (commands.Length, problems);
    }

    private sealed record Parameter(string Label, string? Property, string? Description, bool IsArgument);

    private sealed record Command(string[] Path, string Settings, Parameter[] Parameters);

    private static IEnumerable<Command> Commands(XElement parent, string[] path)
    {
        foreach (XElement element in parent.Elements("Command"))
        {
            string[] here = [.. path, (string)element.Attribute("Name")!];
            if ((string?)element.Attribute("IsBranch") == "true")
            {
                foreach (Command inner in Commands(element, here))
                {
                    yield return inner;
                }
                continue;
            }
            XElement? parameters = element.Element("Parameters");
            Parameter[] all = parameters is null ? [] :
            [
                .. parameters.Elements("Argument").Select(a => new Parameter("<" + (string)a.Attribute("Name")! + ">", null, Text(a), IsArgument: true)),
                .. parameters.Elements("Option").Select(o => new Parameter("--" + ((string)o.Attribute("Long")!).Split(',')[0], null, Text(o), IsArgument: false)),
            ];
            string settings = (string)element.Attribute("Settings")!;
            yield return new Command(here, settings, [.. all.Select(p => p with { Property = PropertyOf(settings, p) })]);
        }
    }

    private static string? Text(XElement element) => element.Element("Description") is { } d ? Normalize(d.Value) : null;

    private static string Normalize(string text) => Regex.Replace(text, @"\s+", " ").Trim();

    /// <summary>The settings property behind an option (by its first long name) or an argument (by its value name).</summary>
    private static string? PropertyOf(string settingsType, Parameter parameter)
    {
        Type? type = SettingsType(settingsType);
        if (type is null)
        {
            return null;
        }
        foreach (PropertyInfo property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (!parameter.IsArgument && property.GetCustomAttribute<CommandOptionAttribute>() is { } option
                && option.LongNames.FirstOrDefault() is { } first && "--" + first == parameter.Label)
            {
                return property.Name;
            }
            if (parameter.IsArgument && property.GetCustomAttribute<CommandArgumentAttribute>() is { } argument
                && "<" + argument.ValueName + ">" == parameter.Label)
            {
                return property.Name;
            }
        }
        return null;
    }

    private static Type? SettingsType(string name) =>
        AppDomain.CurrentDomain.GetAssemblies().Select(a => a.GetType(name)).FirstOrDefault(t => t is not null);

    private static bool IsTypeDefault(object value) => value switch
    {
        bool b => !b,
        string s => s.Length == 0,
        Array a => a.Length == 0,
        IConvertible c when value.GetType().IsPrimitive => c.ToDouble(CultureInfo.InvariantCulture) == 0,
        _ => false,
    };

    /// <summary>The help line that lists <paramref name="parameter"/> (options by their first long name, arguments by name).</summary>
    private static string? HelpLine(string help, Parameter parameter)
    {
        string pattern = parameter.IsArgument
            ? @"^\s+" + Regex.Escape(parameter.Label) + @"(\s|$)"
            : @"^\s+(-\w,\s+)?" + Regex.Escape(parameter.Label) + @"(\s|$|<|\[)";
        return help.Split('\n').FirstOrDefault(l => Regex.IsMatch(l, pattern, RegexOptions.IgnoreCase));
    }

    /// <summary>Runs a command tree in process with its output captured, wide enough that no help line wraps.</summary>
    private static async Task<(int Code, string Output)> RunAsync(string executable, Action<IConfigurator> configure, params string[] args)
    {
        var output = new StringWriter();
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(output),
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        console.Profile.Width = 2000;
        var app = new CommandApp();
        app.Configure(config =>
        {
            config.SetApplicationName(executable);
            config.ConfigureConsole(console);
            config.UseStrictParsing();
            configure(config);
        });
        int code = await app.RunAsync(args);
        return (code, output.ToString());
    }

    private sealed class UndescribedCommand : Command<UndescribedCommand.Settings>
    {
        public sealed class Settings : CommandSettings
        {
            [CommandOption("--described")]
            [Description("Has one.")]
            public bool Described { get; init; }

            [CommandOption("--undescribed")]
            public bool Undescribed { get; init; }

            [CommandOption("--port <N>")]
            [Description("A port.")]
            public int Port { get; init; } = 7000;
        }

        public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken) => 0;
    }
}
