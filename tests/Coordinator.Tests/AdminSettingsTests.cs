using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Cli;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Tests.Cli;
using Federated.Trust;

namespace Federated.Coordinator.Tests;

/// <summary>The admin CLI's connection defaults and the adapter-signing identity `pki init` makes.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class AdminSettingsTests
{
    [Fact]
    public async Task AdminCommand_NothingListening_OneLineWithTheCauseAndTheFlagNoTypeNames()
    {
        using var dir = new TempDirectory();
        string pki = await CoordinatorCli.InitPkiAsync(dir);
        // A port nothing listens on: a closed loopback port refuses at once.
        using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        probe.Start();
        int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();

        (int code, _, string stderr) = await CoordinatorCli.RunCapturedAsync("budget", "show", "--coordinator", $"https://127.0.0.1:{port}",
            "--identity", Path.Combine(pki, "officer.pfx"), "--ca", Path.Combine(pki, "ca.crt"));

        Assert.Equal(CliRunner.Failed, code);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith($"coordinator: error: Unavailable: cannot reach the coordinator at https://127.0.0.1:{port}/ (", line, StringComparison.Ordinal);
        Assert.EndsWith("); check --coordinator and that it is running", line, StringComparison.Ordinal);
        Assert.DoesNotContain("subchannel", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", line, StringComparison.Ordinal);
    }

    [Fact]
    public void ServeResolve_AdminVariablesSet_ServeSettingsStillBind()
    {
        // FEDERATED_COORDINATOR shares serve's FEDERATED_ prefix and lands on the "Coordinator" section's own value.
        using var dir = new TempDirectory();
        Environment.SetEnvironmentVariable(AdminSettings.CoordinatorVariable, "https://coordinator.example.org:7443");
        Environment.SetEnvironmentVariable("FEDERATED_Coordinator__Pki", "env-pki");
        try
        {
            CoordinatorOptions options = ServeCommand.Resolve(new ServeCommand.Settings { Port = 4444 }, dir.Path);

            Assert.Equal(("env-pki", 4444), (options.Pki, options.Port));
        }
        finally
        {
            Environment.SetEnvironmentVariable(AdminSettings.CoordinatorVariable, null);
            Environment.SetEnvironmentVariable("FEDERATED_Coordinator__Pki", null);
        }
    }

    [Fact]
    public async Task PkiInit_AdapterSigner_CodeSigningOnlyAndNeverATlsIdentity()
    {
        using var dir = new TempDirectory();
        (int code, _, _) = await ConsoleCapture.RunAsync(() => CliRunner.RunAsync("coordinator", CoordinatorCommands.Configure, ["pki", "init", "--out", dir.Path]));
        Assert.Equal(0, code);

        using X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(dir.File(FederationPki.CaCertificateFile));
        using X509Certificate2 signer = X509CertificateLoader.LoadPkcs12FromFile(dir.File(FederationPki.AdapterSignerName + ".pfx"), password: null);
        Assert.True(signer.HasPrivateKey);
        X509EnhancedKeyUsageExtension usage = Assert.Single(signer.Extensions.OfType<X509EnhancedKeyUsageExtension>());
        Assert.Equal(["1.3.6.1.5.5.7.3.3"], usage.EnhancedKeyUsages.Cast<System.Security.Cryptography.Oid>().Select(o => o.Value));
        Assert.Null(FederationRoleExtension.Read(signer));
        var trust = new FederationTrust(ca, TimeProvider.System);
        Assert.True(trust.TryBuildChain(signer, "1.3.6.1.5.5.7.3.3", out _));
        Assert.False(trust.TryValidateClient(signer, out _, out string reason));
        Assert.Contains("does not chain to the federation CA for this purpose", reason, StringComparison.Ordinal);
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(dir.File(FederationPki.AdapterSignerName + ".pfx")));
        }
    }
}
