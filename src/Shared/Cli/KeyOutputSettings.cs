using Spectre.Console.Cli;

namespace Federated.Cli;

/// <summary>The flags of every command that writes private keys (`pki init`, `pki issue`, `renew`): where, under which password, and JSON output.</summary>
public abstract class KeyOutputSettings : CommandSettings
{
    [CommandOption("--out <PATH>")]
    public string? Out { get; init; }

    /// <summary>A file whose first line is the PKCS#12 password (see <see cref="PasswordFile"/>); unencrypted when omitted.</summary>
    [CommandOption("--password-file <FILE>")]
    public string? PasswordFile { get; init; }

    [CommandOption("--json")]
    public bool Json { get; init; }
}
