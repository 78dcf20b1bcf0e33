using System.ComponentModel;
using Federated.Transport;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>
/// The flags every admin command shares: where the coordinator is and who is calling. Each falls back to an
/// environment variable (FEDERATED_COORDINATOR, FEDERATED_IDENTITY, FEDERATED_CA) so a shell session sets them once.
/// </summary>
internal abstract class AdminSettings : CommandSettings
{
    public const string CoordinatorVariable = "FEDERATED_COORDINATOR";
    public const string IdentityVariable = "FEDERATED_IDENTITY";
    public const string CaVariable = "FEDERATED_CA";

    [CommandOption("--coordinator <URL>")]
    [Description("The coordinator's https URL, e.g. https://coordinator.example.org:7443, or a leader and its standbys separated by commas, tried in turn until one answers as leader (default: $FEDERATED_COORDINATOR).")]
    public string? Coordinator { get; init; }

    [CommandOption("--identity <FILE>")]
    [Description("Your PKCS#12 identity from pki init or pki issue (engineer or officer) (default: $FEDERATED_IDENTITY).")]
    public string? Identity { get; init; }

    [CommandOption("--ca <FILE>")]
    [Description("The federation CA certificate (ca.crt) the coordinator's certificate must chain to (default: $FEDERATED_CA).")]
    public string? Ca { get; init; }

    [CommandOption("--password-file <FILE>")]
    [Description("A file whose first line is the identity's password; without it the identity is read unencrypted.")]
    public string? PasswordFile { get; init; }

    [CommandOption("--json")]
    [Description("Print JSON instead of tables and text.")]
    public bool Json { get; init; }
}

/// <summary>The resolved connection flags, checked before anything is sent (a class, not a record: no ToString leaks the password).</summary>
internal sealed class AdminEndpoint(IReadOnlyList<Uri> coordinators, string identityPath, string caPath, string? password)
{
    public AdminEndpoint(Uri coordinator, string identityPath, string caPath, string? password)
        : this([coordinator], identityPath, caPath, password)
    {
    }

    /// <summary>The coordinators to try, in order: one, or a leader and its standbys.</summary>
    public IReadOnlyList<Uri> Coordinators { get; } = coordinators.Count > 0 ? coordinators : throw new ArgumentException("no coordinator address", nameof(coordinators));

    /// <summary>The first coordinator listed.</summary>
    public Uri Coordinator => Coordinators[0];

    public string IdentityPath { get; } = identityPath;

    public string CaPath { get; } = caPath;

    public string? Password { get; } = password;

    /// <summary>Flags first, then the environment; every problem is a usage error naming the flag.</summary>
    public static AdminEndpoint Resolve(AdminSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        string coordinator = Value(settings.Coordinator, AdminSettings.CoordinatorVariable, "--coordinator URL");
        IReadOnlyList<Uri> coordinators;
        if (!coordinator.Contains(','))
        {
            if (!Uri.TryCreate(coordinator, UriKind.Absolute, out Uri? url) || url.Scheme != Uri.UriSchemeHttps || url.Host.Length == 0)
            {
                throw new UsageException($"--coordinator must be an https URL such as https://coordinator.example.org:7443, got '{coordinator}'");
            }
            coordinators = [url];
        }
        else
        {
            coordinators = CoordinatorAddressList.TryParse(coordinator, out CoordinatorAddressList list, out string error)
                ? list.Addresses
                : throw new UsageException(error);
        }
        string identity = Value(settings.Identity, AdminSettings.IdentityVariable, "--identity FILE.pfx");
        if (!File.Exists(identity))
        {
            throw new UsageException($"--identity '{identity}' does not exist");
        }
        string ca = Value(settings.Ca, AdminSettings.CaVariable, "--ca FILE");
        if (!File.Exists(ca))
        {
            throw new UsageException($"--ca '{ca}' does not exist");
        }
        return new AdminEndpoint(coordinators, identity, ca, PasswordFile.Read(settings.PasswordFile));
    }

    private static string Value(string? flag, string variable, string usage)
    {
        if (!string.IsNullOrWhiteSpace(flag))
        {
            return flag;
        }
        string? fromEnvironment = Environment.GetEnvironmentVariable(variable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return fromEnvironment;
        }
        throw new UsageException($"{usage.Split(' ')[0]} is required: pass {usage} or set {variable}");
    }
}
