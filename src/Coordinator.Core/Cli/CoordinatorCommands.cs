using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>The coordinator's command tree; each command lives in its own file under Cli/.</summary>
public static class CoordinatorCommands
{
    public static void Configure(IConfigurator config)
    {
        config.AddCommand<VersionCommand>("version").WithDescription("Print the coordinator's version.");
        config.AddBranch("pki", pki =>
        {
            pki.SetDescription("Create the federation CA and issue identities.");
            pki.AddCommand<PkiInitCommand>("init").WithDescription("Create the root CA (key offline with --root-out), the server and adapter-signer certificates, engineer and officer identities and optionally the renewal intermediate.");
            pki.AddCommand<PkiIssueCommand>("issue").WithDescription("Issue a client, engineer or officer identity (or the adapter signer) with the root key.");
            pki.AddCommand<PkiRevokeCommand>("revoke").WithDescription("Revoke every certificate of a name (CA-signed crl.pem, read by a running coordinator).");
        });
        config.AddBranch("model", model =>
        {
            model.SetDescription("Models to try a federation with.");
            model.AddCommand<ModelTinyCommand>("tiny").WithDescription("Write a random tiny Llama with a byte-level tokenizer (--out DIR).");
        });
        config.AddCommand<ServeCommand>("serve").WithDescription("Run the coordinator (mutual-TLS gRPC, state in SQLite or PostgreSQL).");
        config.AddBranch("state", state =>
        {
            state.SetDescription("The coordinator's state database.");
            state.AddCommand<StateCopyCommand>("copy").WithDescription("Copy a stopped coordinator's state between SQLite and PostgreSQL (--from SRC --to DST), then verify the audit chain, ledger totals and row counts.");
        });
        config.AddBranch("audit", audit =>
        {
            audit.SetDescription("Inspect the audit trail.");
            audit.AddCommand<AuditVerifyCommand>("verify").WithDescription("Verify the audit hash chain and its signed head.");
            audit.AddCommand<AuditShowCommand>("show").WithDescription("Read the audit trail from a running coordinator (engineer, officer); links and head checked.");
        });
        // Admin commands: mutual TLS to a running coordinator; --coordinator, --identity and --ca default to
        // FEDERATED_COORDINATOR, FEDERATED_IDENTITY and FEDERATED_CA.
        config.AddBranch("run", run =>
        {
            run.SetDescription("Start, watch, abort and export federated runs (engineer).");
            run.AddCommand<RunStartCommand>("start").WithDescription("Start a run; refused when its planned epsilon exceeds the budget.");
            run.AddCommand<RunStatusCommand>("status").WithDescription("A run's round, stage, clients reported and epsilon spent (--watch to follow it).");
            run.AddCommand<RunAbortCommand>("abort").WithDescription("Abort a run; the round in progress releases nothing and charges nothing.");
            run.AddCommand<RunExportCommand>("export").WithDescription("Download a run's signed PEFT adapter with its provenance and verify it.");
            run.AddCommand<RunReportCommand>("report").WithDescription("Write report.html and PNG plots of a run's epsilon and participation per round (--run ID --out DIR).");
        });
        config.AddBranch("clients", clients =>
        {
            clients.SetDescription("Edge clients (engineer).");
            clients.AddCommand<ClientsListCommand>("list").WithDescription("The registered edge clients.");
        });
        config.AddBranch("budget", budget =>
        {
            budget.SetDescription("Privacy budgets (officer).");
            budget.AddCommand<BudgetSetCommand>("set").WithDescription("Set a population's (epsilon, delta) budget.");
            budget.AddCommand<BudgetShowCommand>("show").WithDescription("A population's budget: spent, reserved by running runs, remaining.");
        });
        config.AddBranch("ledger", ledger =>
        {
            ledger.SetDescription("The privacy ledger (officer).");
            ledger.AddCommand<LedgerShowCommand>("show").WithDescription("Every charge: one per released round.");
        });
        config.AddCommand<DashboardCommand>("dashboard").WithDescription("A live local web page of runs, rounds, epsilon, clients, budgets and the audit tail, read with your identity (loopback only unless --address).");
        config.AddBranch("privacy", privacy =>
        {
            privacy.SetDescription("Privacy officer's calculator: epsilon for a plan, noise for a target.");
            privacy.AddCommand<PrivacyEpsilonCommand>("epsilon").WithDescription("Epsilon after T rounds: what a run is charged (--mechanism distributed|central), or the subsampled Gaussian.");
            privacy.AddCommand<PrivacyNoiseCommand>("noise").WithDescription("Smallest noise multiplier for a target epsilon (--mechanism for a run's plan).");
        });
    }
}
