using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The coordinator's command tree; each command lives in its own file under Cli/.</summary>
internal static class CoordinatorCommands
{
    public static void Configure(IConfigurator config)
    {
        config.AddCommand<VersionCommand>("version").WithDescription("Print the coordinator's version.");
        config.AddBranch("pki", pki =>
        {
            pki.SetDescription("Create the federation CA and issue identities.");
            pki.AddCommand<PkiInitCommand>("init").WithDescription("Create the CA, the server certificate and engineer and officer identities.");
            pki.AddCommand<PkiIssueCommand>("issue").WithDescription("Issue a client, engineer or officer identity.");
            pki.AddCommand<PkiRevokeCommand>("revoke").WithDescription("Revoke every certificate of a name (CA-signed crl.pem, read by a running coordinator).");
        });
        config.AddCommand<SimulateCommand>("simulate").WithDescription("Run a whole federation on this machine: coordinator, edge clients, DP rounds, signed export.");
        config.AddCommand<ServeCommand>("serve").WithDescription("Run the coordinator (mutual-TLS gRPC, state in SQLite).");
        config.AddBranch("audit", audit =>
        {
            audit.SetDescription("Inspect the audit trail.");
            audit.AddCommand<AuditVerifyCommand>("verify").WithDescription("Verify the audit hash chain and its signed head.");
        });
        config.AddBranch("privacy", privacy =>
        {
            privacy.SetDescription("Privacy officer's calculator: epsilon for a plan, noise for a target.");
            privacy.AddCommand<PrivacyEpsilonCommand>("epsilon").WithDescription("Epsilon after T rounds of the subsampled Gaussian.");
            privacy.AddCommand<PrivacyNoiseCommand>("noise").WithDescription("Smallest noise multiplier for a target epsilon.");
        });
    }
}
