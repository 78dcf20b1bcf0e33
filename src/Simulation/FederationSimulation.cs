using System.Security.Cryptography;
using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Storage;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Memorisation;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TorchSharp;

namespace Federated.Simulation;

/// <summary>
/// The one-command demo: an ephemeral federation CA, a real coordinator on a loopback port with mutual TLS, N edge
/// clients (in this process, each with its own identity, mTLS channel, local policy and ledger) training a LoRA
/// adapter on private non-IID text, distributed Skellam noise under SecAgg+, a budget set by the officer and the
/// run started and watched by the engineer over the admin service.
/// </summary>
internal sealed class FederationSimulation(SimulationOptions options, Action<string> progress)
{
    private const string Population = "default";

    /// <summary>Called once per finished round (and for the round-0 baseline), in order.</summary>
    public Action<RoundReport>? RoundFinished { get; init; }

    /// <summary>Exports the run's final adapter into the given folder (PEFT files, provenance, signature).</summary>
    public Func<SimulationExport, CancellationToken, Task>? Export { get; init; }

    public async Task<SimulationResult> RunAsync(string outDirectory, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(outDirectory);
        options.Validate();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string root = Path.Combine(Path.GetTempPath(), "federated-simulate-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)));
        Directory.CreateDirectory(root);
        int previousThreads = torch.get_num_threads();
        // Each client trains on its own thread; one torch thread each keeps two cores from thrashing.
        torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / options.Clients));
        try
        {
            return await RunInAsync(root, outDirectory, clock, cancellationToken);
        }
        finally
        {
            torch.set_num_threads(previousThreads);
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
                progress($"could not delete the temporary folder {root}");
            }
        }
    }

    private async Task<SimulationResult> RunInAsync(string root, string outDirectory, System.Diagnostics.Stopwatch clock, CancellationToken cancellationToken)
    {
        IReadOnlyList<string> names = SimulationData.ClientNames(options.Clients);
        string pki = Path.Combine(root, "pki");
        progress($"making an ephemeral federation CA with {names.Count} client identities, an engineer and an officer in {pki}");
        FederationPki.CreateFederation(pki, names, TimeProvider.System);
        // Every identity is issued: the root key has no further use, and the coordinator never reads it.
        File.Delete(Path.Combine(pki, FederationPki.CaKeyFile));
        string ca = Path.Combine(pki, FederationPki.CaCertificateFile);

        string model = options.Model is { } given ? Path.GetFullPath(given) : SimulationModel.WriteTiny(Path.Combine(root, "tiny-llama"), options.Seed, progress);
        LlamaConfig config = SimulationModel.LoadConfig(model);
        using HuggingFaceTokenizer tokenizer = SimulationModel.LoadTokenizer(model, config);

        IReadOnlyList<ClientData> data = options.Data is { } dir ? SimulationData.FromDirectory(dir, names) : SimulationData.Synthetic(names, options.Seed);
        CanaryFormat format = CanaryFormat.Default;
        string[] secrets = [.. Enumerable.Range(0, options.Canaries).Select(_ => format.RandomSecret())];
        if (secrets.Length > 0)
        {
            data = [SimulationData.WithCanaries(data[0], [.. secrets.Select(format.Text)], options.CanaryRepeats), .. data.Skip(1)];
            progress($"planted {secrets.Length} canaries '{format.Prefix}<{format.Digits} random digits>' {options.CanaryRepeats} times each in {data[0].Name}'s training data");
        }
        var datasetOptions = new DatasetOptions { MaxLength = Math.Min(SimulationModel.MaxSequenceLength, config.MaxPositionEmbeddings) };
        var train = new Dictionary<string, IReadOnlyList<TokenBatch>>(StringComparer.Ordinal);
        var eval = new Dictionary<string, IReadOnlyList<TokenBatch>>(StringComparer.Ordinal);
        var records = new Dictionary<string, RecordLevelData>(StringComparer.Ordinal);
        foreach (ClientData client in data)
        {
            train[client.Name] = SimulationModel.Batches(client.TrainLines, client.Source, tokenizer, datasetOptions, shuffle: true);
            records[client.Name] = SimulationModel.Records(client.TrainLines, client.Source, tokenizer, datasetOptions);
            eval[client.Name] = SimulationModel.Batches(client.EvalLines, client.Source + " (held out)", tokenizer, datasetOptions, shuffle: false);
            progress($"{client.Name}: {client.TrainLines.Count} training and {client.EvalLines.Count} held-out examples ({client.Source})");
        }

        string state = Path.Combine(root, "coordinator.db");
        // Stored adapters are encrypted at rest, as a production coordinator's should be.
        string atRestKey = Path.Combine(pki, AtRestCipher.DefaultFileName);
        AtRestCipher.CreateKeyFile(atRestKey);
        await using CoordinatorHost host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = pki, Port = 0, Address = "127.0.0.1", State = state, HeartbeatIntervalSeconds = 1, AtRestKey = atRestKey },
            logging => logging.AddSimpleConsole(o => o.SingleLine = true).AddFilter((_, level) => level >= LogLevel.Warning)
                .Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
        await host.StartAsync(cancellationToken);
        progress($"coordinator listening on {host.Address} (mutual TLS, federation CA only; adapters encrypted at rest)");

        using var stopClients = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var clients = new SimulatedClients(options, progress);
        Task[] running = clients.Start(names, host.Address, pki, ca, model, train, records, root, stopClients.Token);
        try
        {
            var run = new SimulatedRun(host, pki, ca, model, tokenizer, format, secrets, train, eval, clients, running);
            return await DriveRunAsync(run, outDirectory, clock, cancellationToken);
        }
        finally
        {
            await stopClients.CancelAsync();
            await Task.WhenAll(running.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }

    private async Task<SimulationResult> DriveRunAsync(SimulatedRun run, string outDirectory, System.Diagnostics.Stopwatch clock, CancellationToken cancellationToken)
    {
        CoordinatorHost host = run.Host;
        using EdgeIdentity officer = EdgeIdentity.Load(Path.Combine(run.Pki, "officer.pfx"), run.Ca);
        using var asOfficer = new CoordinatorConnection(host.Address, officer);
        var officerAdmin = new AdminService.AdminServiceClient(asOfficer.Channel);
        using EdgeIdentity engineer = EdgeIdentity.Load(Path.Combine(run.Pki, "engineer.pfx"), run.Ca);
        using var asEngineer = new CoordinatorConnection(host.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);

        RunPlan plan = Plan(run.Model);
        // The officer's budget is what this plan needs: the coordinator prices the plan and would refuse anything more.
        RunPrice price = Price(plan);
        double planned = price.PlannedEpsilon;
        // Rounded up to three significant digits, as an officer would write it. A record-only run charges no client-level
        // budget (the population still needs one to start a run).
        double scale = planned > 0 ? Math.Pow(10, Math.Floor(Math.Log10(planned)) - 2) : 1;
        double budget = planned > 0 ? Math.Max(Math.Ceiling(planned / scale) * scale, planned * (1 + 1e-9)) : 1;
        await officerAdmin.SetBudgetAsync(new SetBudgetRequest { Population = Population, Epsilon = budget, Delta = options.Delta }, asOfficer.Call(cancellationToken));
        progress($"officer set the budget of population '{Population}': epsilon {budget:G4} at delta {options.Delta:G3}");
        await run.Clients.WaitForRegisteredAsync(admin, asEngineer, options.Clients, run.Running, cancellationToken);
        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(cancellationToken));
        progress($"engineer started {started.RunId}: {options.Rounds} rounds of {options.Clients} clients, privacy unit {options.PrivacyUnit}: "
            + (options.ClientLevel ? $"distributed Skellam noise (z = {started.NoiseMultiplier:G3}, C = {options.ClipNorm:G3}) under SecAgg+, planned epsilon {started.PlannedEpsilon:G4}" : "no client-level noise, SecAgg+")
            + (options.RecordLevel ? $"; DP-SGD at every client (z = {options.RecordNoise:G3}, C = {options.RecordClip:G3}, expected batch {options.RecordBatch})" : ""));

        using LlamaForCausalLM evaluator = LlamaForCausalLM.FromPretrained(run.Model, torch.CPU);
        var reporter = new RoundReporter(host, officerAdmin, asOfficer, run.Clients, evaluator, run.Eval, progress, RoundFinished);
        string initialSha = (await admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = started.RunId }, asEngineer.Call(cancellationToken))).AdapterSha256;
        reporter.Baseline(initialSha);

        RunStatus last = await reporter.WatchAsync(admin, started.RunId, cancellationToken);
        if (last.State != RunState.Completed)
        {
            throw new InvalidOperationException($"run {started.RunId} ended {last.State}: {last.Detail}");
        }
        LedgerEntry[] ledger = [.. (await officerAdmin.GetLedgerAsync(new GetLedgerRequest { RunId = started.RunId }, asOfficer.Call(cancellationToken))).Entries];
        double epsilon = ledger.Length == 0 ? 0 : ledger[^1].EpsilonAfter;

        if (Export is null)
        {
            throw new InvalidOperationException("no exporter is configured");
        }
        progress($"exporting the final adapter to {outDirectory}");
        await Export(new SimulationExport(host, started.RunId, outDirectory, asEngineer, admin, run.Ca), cancellationToken);

        IReadOnlyList<CanaryReport> canaries = [];
        double? noDpEval = null;
        if (run.Secrets.Length > 0)
        {
            (canaries, noDpEval) = await new CanaryAudit(options, progress).RunAsync(host, run.Model, run.Tokenizer, run.Format, run.Secrets, run.Train, run.Eval,
                initialSha, outDirectory, cancellationToken);
        }
        return new SimulationResult(started.RunId, reporter.Reports, started.PlannedEpsilon, epsilon, options.Delta, started.NoiseMultiplier, options.ClipNorm,
            checked((int)plan.MinSurvivors), price.Privacy, last.AdapterSha256, canaries, noDpEval, clock.Elapsed.TotalSeconds)
        {
            RecordEpsilons = run.Clients.RecordEpsilons(started.RunId),
        };
    }

    private RunPlan Plan(string model)
    {
        var plan = new RunPlan
        {
            BaseModel = model,
            LoraRank = (uint)options.Rank,
            Rounds = (uint)options.Rounds,
            ClientsPerRound = (uint)options.Clients,
            LocalSteps = (uint)options.LocalSteps,
            LearningRate = options.LearningRate,
            ClipNorm = options.ClipNorm,
            Mechanism = NoiseMechanism.DistributedSkellam,
            NoiseMultiplier = options.ClientLevel ? options.NoiseMultiplier : 0,
            PrivacyUnit = options.PrivacyUnit switch { "record" => PrivacyUnit.Record, "both" => PrivacyUnit.Both, _ => PrivacyUnit.Client },
            Delta = options.Delta,
            Population = Population,
            // t = n: the survivors' noise shares add up to exactly z C; with t < n each client would add sqrt(n / t) times more.
            MinSurvivors = (uint)options.Clients,
        };
        plan.TargetModules.Add(options.Targets);
        if (options.RecordLevel)
        {
            plan.RecordNoiseMultiplier = options.RecordNoise;
            plan.RecordMaxGradNorm = options.RecordClip;
            plan.RecordExpectedBatch = (uint)options.RecordBatch;
        }
        return plan;
    }

    /// <summary>
    /// What the coordinator will charge for the plan, from the coordinator's own pricing (one <see cref="Aggregation.Privacy.PrivacyPlan"/>)
    /// over the adapter shape that config.json gives. If this ever disagreed with the coordinator, StartRun would refuse and name both numbers.
    /// </summary>
    private RunPrice Price(RunPlan plan)
    {
        int dimension = LoraShapes.BDimension(LlamaConfig.Load(plan.BaseModel), new LoraSettings(Rank: options.Rank, TargetModules: [.. options.Targets]));
        return RunPricing.Price(plan, dimension);
    }

    /// <summary>What the run's driver needs from the set-up: the coordinator, the PKI, the model and data, and the clients.</summary>
    private sealed record SimulatedRun(
        CoordinatorHost Host, string Pki, string Ca, string Model, HuggingFaceTokenizer Tokenizer, CanaryFormat Format, string[] Secrets,
        IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> Train, IReadOnlyDictionary<string, IReadOnlyList<TokenBatch>> Eval,
        SimulatedClients Clients, Task[] Running);
}
