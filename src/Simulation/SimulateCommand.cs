using System.ComponentModel;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Federated.Coordinator.Cli;
using Spectre.Console.Cli;

namespace Federated.Simulation;

/// <summary>
/// The one-command demo: a real coordinator and N edge clients on loopback mutual TLS train a LoRA adapter with
/// distributed DP under SecAgg+, print a row per round, and export the signed adapter with its provenance.
/// </summary>
internal sealed class SimulateCommand : AsyncCommand<SimulateCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandOption("--clients <N>")]
        [Description("Edge clients, each with its own identity, data and local ledger (2..64).")]
        [DefaultValue(SimulationOptions.DefaultClients)]
        public int Clients { get; init; } = SimulationOptions.DefaultClients;

        [CommandOption("--rounds <N>")]
        [Description("Federated rounds (1..1000).")]
        [DefaultValue(SimulationOptions.DefaultRounds)]
        public int Rounds { get; init; } = SimulationOptions.DefaultRounds;

        [CommandOption("--model <DIR>")]
        [Description("Base model folder (Hugging Face Llama family with tokenizer.json) (default: a random tiny Llama).")]
        public string? Model { get; init; }

        [CommandOption("--data <DIR>")]
        [Description("Folder with client-1.jsonl .. client-N.jsonl (optional client-K.eval.jsonl) (default: synthetic non-IID text).")]
        public string? Data { get; init; }

        [CommandOption("--out <DIR>")]
        [Description("Folder for the exported adapter, absent or empty (default: a new simulate-adapter-<time> folder here).")]
        public string? Out { get; init; }

        [CommandOption("--json")]
        [Description("One JSON object per round, then a summary object, on stdout.")]
        public bool Json { get; init; }

        [CommandOption("--canaries <N>")]
        [Description("Plant N random canaries in client-1's data and report their exposure with and without DP (0..100).")]
        [DefaultValue(0)]
        public int Canaries { get; init; }

        [CommandOption("--seed <N>")]
        [Description("Seeds the synthetic data and the tiny model; noise and masks always come from the CSPRNG (default: random).")]
        public long? Seed { get; init; }

        [CommandOption("--local-steps <N>")]
        [Description("Local optimiser steps per client per round (1..10000).")]
        [DefaultValue(SimulationOptions.DefaultLocalSteps)]
        public int LocalSteps { get; init; } = SimulationOptions.DefaultLocalSteps;

        [CommandOption("--learning-rate <LR>")]
        [Description("Local learning rate.")]
        [DefaultValue(SimulationOptions.DefaultLearningRate)]
        public double LearningRate { get; init; } = SimulationOptions.DefaultLearningRate;

        [CommandOption("--noise-multiplier <Z>")]
        [Description("Noise multiplier z of the distributed Skellam mechanism (0.01..100).")]
        [DefaultValue(SimulationOptions.DefaultNoiseMultiplier)]
        public double NoiseMultiplier { get; init; } = SimulationOptions.DefaultNoiseMultiplier;

        [CommandOption("--clip-norm <C>")]
        [Description("L2 clip norm of each client's update.")]
        [DefaultValue(SimulationOptions.DefaultClipNorm)]
        public double ClipNorm { get; init; } = SimulationOptions.DefaultClipNorm;

        [CommandOption("--rank <R>")]
        [Description("LoRA rank (1..64).")]
        [DefaultValue(SimulationOptions.DefaultRank)]
        public int Rank { get; init; } = SimulationOptions.DefaultRank;

        [CommandOption("--targets <LIST>")]
        [Description("Comma-separated LoRA target modules (default: " + SimulationOptions.DefaultTargetList + ").")]
        public string? Targets { get; init; }

        /// <summary>Also print each edge client's own log lines (training loss, update norm before clipping): the global --verbose.</summary>
        public bool Verbose { get; init; } = CliRunner.Verbose;

        [CommandOption("--privacy-unit <UNIT>")]
        [Description("client (default): distributed noise on the aggregate protects each client; record: DP-SGD at every client protects each record "
            + "(no client-level noise); both.")]
        [DefaultValue("client")]
        public string PrivacyUnit { get; init; } = "client";

        [CommandOption("--record-noise <Z>")]
        [Description("DP-SGD noise multiplier at every client (with --privacy-unit record or both).")]
        [DefaultValue(SimulationOptions.DefaultRecordNoise)]
        public double RecordNoise { get; init; } = SimulationOptions.DefaultRecordNoise;

        [CommandOption("--record-clip <C>")]
        [Description("DP-SGD per-record clip norm at every client (with --privacy-unit record or both).")]
        [DefaultValue(SimulationOptions.DefaultRecordClip)]
        public double RecordClip { get; init; } = SimulationOptions.DefaultRecordClip;

        [CommandOption("--batch-size <B>")]
        [Description("DP-SGD expected records per local step (with --privacy-unit record or both).")]
        [DefaultValue(SimulationOptions.DefaultRecordBatch)]
        public int BatchSize { get; init; } = SimulationOptions.DefaultRecordBatch;

        [CommandOption("--canary-repeats <N>")]
        [Description("How often each canary is inserted into client-1's training data (1..1000).")]
        [DefaultValue(SimulationOptions.DefaultCanaryRepeats)]
        public int CanaryRepeats { get; init; } = SimulationOptions.DefaultCanaryRepeats;
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        long seed = settings.Seed ?? (BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & 0x7FFF_FFFF);
        var options = new SimulationOptions
        {
            Clients = settings.Clients,
            Rounds = settings.Rounds,
            Model = settings.Model,
            Data = settings.Data,
            Seed = seed,
            Canaries = settings.Canaries,
            CanaryRepeats = settings.CanaryRepeats,
            LocalSteps = settings.LocalSteps,
            LearningRate = settings.LearningRate,
            NoiseMultiplier = settings.NoiseMultiplier,
            ClipNorm = settings.ClipNorm,
            Rank = settings.Rank,
            Targets = settings.Targets is { } list ? [.. list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)] : SimulationOptions.DefaultTargets,
            Verbose = settings.Verbose,
            PrivacyUnit = settings.PrivacyUnit,
            RecordNoise = settings.RecordNoise,
            RecordClip = settings.RecordClip,
            RecordBatch = settings.BatchSize,
        };
        options.Validate();
        string outDirectory = Path.GetFullPath(settings.Out ?? DefaultOut());
        if (File.Exists(outDirectory) || (Directory.Exists(outDirectory) && Directory.EnumerateFileSystemEntries(outDirectory).Any()))
        {
            throw new UsageException($"--out '{outDirectory}' must be an absent or empty folder");
        }
        string caCopy = outDirectory.TrimEnd(Path.DirectorySeparatorChar) + ".ca.crt";
        if (options.Data is not null)
        {
            // The layout is checked before anything starts; the simulation reads the files again when it needs them.
            _ = SimulationData.FromDirectory(options.Data, SimulationData.ClientNames(options.Clients));
        }

        bool json = settings.Json;
        void Progress(string line) => Console.Error.WriteLine($"simulate: {line}");
        Progress($"seed {seed}; {options.Clients} clients, {options.Rounds} rounds, {options.LocalSteps} local steps at learning rate {options.LearningRate:G3}");
        if (!json)
        {
            Console.WriteLine($"{"round",5} {"train_loss",10} {"eval_loss",10} {"epsilon",9} {"participants",12} {"dropouts",8} {"seconds",8}");
        }
        var simulation = new FederationSimulation(options, Progress)
        {
            RoundFinished = report =>
            {
                if (json)
                {
                    Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
                    {
                        ["round"] = report.Round,
                        ["train_loss"] = Number(report.TrainLoss),
                        ["eval_loss"] = Number(report.EvalLoss),
                        ["epsilon"] = report.Epsilon,
                        ["participants"] = report.Participants,
                        ["dropouts"] = report.Dropouts,
                        ["seconds"] = Math.Round(report.Seconds, 3),
                    }));
                }
                else
                {
                    string train = double.IsNaN(report.TrainLoss) ? "-" : report.TrainLoss.ToString("F4", CultureInfo.InvariantCulture);
                    string released = report.Released ? "" : "  (failed: nothing released, nothing charged)";
                    Console.WriteLine($"{report.Round,5} {train,10} {report.EvalLoss,10:F4} {report.Epsilon,9:F3} {report.Participants,12} {report.Dropouts,8} {report.Seconds,8:F1}{released}");
                }
            },
            Export = (export, ct) => SimulationExporter.ExportAsync(export, caCopy, ct),
        };
        SimulationResult result = await simulation.RunAsync(outDirectory, cancellationToken);
        string reportDirectory = SimulationReport.DirectoryFor(outDirectory);
        Coordinator.Reports.RunReportWriter.Write(SimulationReport.Create(result, options), reportDirectory);
        Print(result, outDirectory, caCopy, reportDirectory, seed, options, json);
        return CliRunner.Ok;
    }

    private static void Print(SimulationResult result, string outDirectory, string caCopy, string reportDirectory, long seed, SimulationOptions options, bool json)
    {
        double initial = result.Rounds[0].EvalLoss;
        double final = result.Rounds[^1].EvalLoss;
        if (json)
        {
            var summary = new Dictionary<string, object?>
            {
                ["adapter_dir"] = outDirectory,
                ["ca_certificate"] = caCopy,
                ["report"] = Path.Combine(reportDirectory, Coordinator.Reports.RunReportWriter.HtmlFile),
                ["run_id"] = result.RunId,
                ["adapter_sha256"] = result.AdapterSha256,
                ["initial_eval_loss"] = Number(initial),
                ["final_eval_loss"] = Number(final),
                ["epsilon"] = result.Epsilon,
                ["planned_epsilon"] = result.PlannedEpsilon,
                ["delta"] = result.Delta,
                // The run's unit; epsilon is client-level (0 under record: no client-level noise), record_epsilon the
                // largest of the clients' own record-level epsilons (each at its own record count).
                ["privacy_unit"] = options.PrivacyUnit,
                ["adjacency"] = result.Privacy.AdjacencyName,
                ["record_epsilon"] = options.RecordLevel ? RecordEpsilon(result) : null,
                ["record_epsilons"] = options.RecordLevel ? result.RecordEpsilons : null,
                ["record_adjacency"] = options.RecordLevel ? Aggregation.Privacy.PrivacyUnitNames.Name(Aggregation.Privacy.PrivacyUnitNames.RecordAdjacency) : null,
                ["record_noise_multiplier"] = options.RecordLevel ? options.RecordNoise : null,
                ["record_max_grad_norm"] = options.RecordLevel ? options.RecordClip : null,
                ["record_expected_batch"] = options.RecordLevel ? options.RecordBatch : null,
                ["noise_multiplier"] = result.NoiseMultiplier,
                ["clip_norm"] = result.ClipNorm,
                ["mechanism"] = "distributed_skellam",
                ["secagg_threshold"] = result.Threshold,
                ["clients"] = options.Clients,
                ["rounds"] = options.Rounds,
                ["local_steps"] = options.LocalSteps,
                ["learning_rate"] = options.LearningRate,
                ["seed"] = seed,
                ["seconds"] = Math.Round(result.Seconds, 3),
            };
            if (result.Canaries.Count > 0)
            {
                summary["canary_estimate"] = "sampled rank (Carlini et al. 2019, Sec. 4.2): exposure = -log2((k + 1) / (S + 1))";
                summary["canary_candidates"] = result.Canaries[0].WithDp.Candidates;
                summary["canary_space_bits"] = Training.Memorisation.CanaryFormat.Default.SpaceBits;
                summary["canary_max_measurable_exposure"] = result.Canaries[0].WithDp.MaxMeasurable;
                summary["canary_repeats"] = options.CanaryRepeats;
                summary["no_dp_eval_loss"] = result.NoDpEvalLoss;
                summary["canaries"] = result.Canaries.Select(c => new Dictionary<string, object?>
                {
                    ["canary"] = Training.Memorisation.CanaryFormat.Default.Text(c.Secret),
                    ["exposure_dp"] = c.WithDp.Exposure,
                    ["exposure_no_dp"] = c.WithoutDp.Exposure,
                    ["log_perplexity_dp"] = c.WithDp.LogPerplexity,
                    ["log_perplexity_no_dp"] = c.WithoutDp.LogPerplexity,
                }).ToList();
            }
            Console.WriteLine(JsonSerializer.Serialize(summary));
            return;
        }
        Console.WriteLine();
        Console.WriteLine($"held-out eval loss {initial:F4} -> {final:F4} (mean over the clients' own held-out text)");
        if (options.ClientLevel)
        {
            Console.WriteLine($"privacy spent: epsilon {result.Epsilon:G4} at delta {result.Delta:G3} for the whole run, per client ({result.Privacy.PrivacyUnit}-level, " +
                $"{result.Privacy.AdjacencyName}; distributed discrete Skellam, noise multiplier {result.NoiseMultiplier:G3}, clip norm {result.ClipNorm:G3}, " +
                $"SecAgg+ threshold {result.Threshold} of {options.Clients}).");
            Console.WriteLine("  With only a handful of clients, useful learning needs little noise, so this epsilon is large: it demonstrates the");
            Console.WriteLine("  machinery, not a strong guarantee. Real deployments have many clients per round, and the noise per client shrinks.");
        }
        else
        {
            Console.WriteLine("privacy spent, client-level: none claimed (privacy unit record: the aggregate carries no client-level noise).");
        }
        if (options.RecordLevel)
        {
            Console.WriteLine($"privacy spent: record epsilon {RecordEpsilon(result):G4} at delta {result.Delta:G3} for the whole run, per record " +
                $"(record-level, {Aggregation.Privacy.PrivacyUnitNames.Name(Aggregation.Privacy.PrivacyUnitNames.RecordAdjacency)}; DP-SGD at every client, " +
                $"noise multiplier {options.RecordNoise:G3}, clip {options.RecordClip:G3}, expected batch {options.RecordBatch}; the largest of the clients' own ledgers: " +
                string.Join(", ", result.RecordEpsilons.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} {p.Value:G4}")) + ").");
        }
        Console.WriteLine($"adapter (PEFT, provenance.json, adapter.p7s): {outDirectory}");
        Console.WriteLine($"verify it: edge-client verify-adapter {outDirectory} --ca {caCopy}");
        Console.WriteLine($"report (held-out loss, epsilon and participation per round): {Path.Combine(reportDirectory, Coordinator.Reports.RunReportWriter.HtmlFile)}");
        if (result.Canaries.Count > 0)
        {
            CanaryReport first = result.Canaries[0];
            Console.WriteLine();
            Console.WriteLine($"memorisation audit (Carlini et al. 2019 exposure; sampled rank against {first.WithDp.Candidates} random secrets, " +
                $"so at most {first.WithDp.MaxMeasurable:F1} bits are measurable of log2|R| = {Training.Memorisation.CanaryFormat.Default.SpaceBits:F1}):");
            Console.WriteLine($"{"canary",-32} {"exposure with DP",17} {"without DP",11}");
            foreach (CanaryReport canary in result.Canaries)
            {
                Console.WriteLine($"{Training.Memorisation.CanaryFormat.Default.Text(canary.Secret),-32} {canary.WithDp.Exposure,17:F2} {canary.WithoutDp.Exposure,11:F2}");
            }
            Console.WriteLine($"  without DP: the same data, rounds and steps by plain federated averaging (no clipping, no noise); its eval loss {result.NoDpEvalLoss:F4}.");
            Console.WriteLine("  Exposure near 1 bit means the model finds the planted secret no likelier than a random one.");
        }
    }

    private static double RecordEpsilon(SimulationResult result) => result.RecordEpsilons.Count == 0 ? 0 : result.RecordEpsilons.Values.Max();

    private static double? Number(double value) => double.IsFinite(value) ? value : null;

    private static string DefaultOut()
    {
        string stem = "simulate-adapter-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        string path = Path.Combine(Directory.GetCurrentDirectory(), stem);
        for (int i = 2; Directory.Exists(path) || File.Exists(path); i++)
        {
            path = Path.Combine(Directory.GetCurrentDirectory(), $"{stem}-{i}");
        }
        return path;
    }
}
