using System.ComponentModel;
using Spectre.Console.Cli;

namespace Federated.Cli;

/// <summary>The flags of every command that writes private keys (`pki init`, `pki issue`, `renew`): where, under which password, and JSON output.</summary>
public abstract class KeyOutputSettings : CommandSettings
{
    [CommandOption("--out <PATH>")]
    [Description("Where the key goes: the new FILE.pfx (pki issue: required; renew: the --identity file, replaced, when omitted), or for pki init the PKI folder (older name of --pki).")]
    public string? Out { get; init; }

    /// <summary>A file whose first line is the PKCS#12 password (see <see cref="PasswordFile"/>); unencrypted when omitted.</summary>
    [CommandOption("--password-file <FILE>")]
    [Description("A file whose first line is the PKCS#12 password of the identities written (renew also reads --identity with it); without it they are unencrypted.")]
    public string? PasswordFile { get; init; }

    [CommandOption("--json")]
    [Description("Print one JSON object instead of text.")]
    public bool Json { get; init; }
}
