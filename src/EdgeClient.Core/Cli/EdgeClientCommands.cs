using Spectre.Console.Cli;

namespace Federated.EdgeClient.Cli;

/// <summary>The edge client's command tree; each command lives in its own file under Cli/.</summary>
public static class EdgeClientCommands
{
    public static void Configure(IConfigurator config)
    {
        config.AddCommand<ScrubCommand>("scrub").WithDescription("Preview or write the PII scrubbing applied before training.");
        config.AddCommand<VerifyAdapterCommand>("verify-adapter").WithDescription("Verify an adapter folder's signature against the federation CA.");
        config.AddBranch("ledger", ledger =>
        {
            ledger.SetDescription("This machine's own privacy ledger.");
            ledger.AddCommand<LedgerShowCommand>("show").WithDescription("Show the epsilon spent on this machine's data, per run and in total.");
        });
        config.AddCommand<RenewCommand>("renew").WithDescription("Renew this machine's certificate with a new key (CSR over mutual TLS).");
        config.AddCommand<VersionCommand>("version").WithDescription("Print the edge client's version.");
        config.AddCommand<TrainCommand>("train")
            .WithDescription("Fine-tune a LoRA adapter locally on a JSONL file and write a PEFT folder (nothing leaves the machine).");
        config.AddCommand<RunCommand>("run")
            .WithDescription("Take part in federated rounds: train locally, add DP noise, mask and upload, until Ctrl+C.");
        config.AddCommand<EvalCommand>("eval")
            .WithDescription("Print mean_loss, perplexity and tokens of a model, with or without an adapter, on a JSONL file.");
        config.AddCommand<GenerateCommand>("generate")
            .WithDescription("Continue a prompt or a chat with a model, with or without an adapter (greedy, or sampled with a seed).");
    }
}
