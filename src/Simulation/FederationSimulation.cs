using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Lora;
using Federated.Training.Memorisation;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Tokenization;
using Federated.Training.Trainer;
using Grpc.Core;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TorchSharp;

namespace Federated.Simulation;

/// <summary>One finished round as the simulation reports it (round 0 is the baseline before any training).</summary>
internal sealed record RoundReport(int Round, double TrainLoss, double EvalLoss, double Epsilon, int Participants, int Dropouts, double Seconds, bool Released);

/// <summary>What a memorisation audit measured: each canary's exposure with the DP run's adapter and without DP.</summary>
internal sealed record CanaryReport(string Secret, CanaryExposureResult WithDp, CanaryExposureResult WithoutDp);

/// <summary>The whole simulation's outcome.</summary>
internal sealed record SimulationResult(
    string RunId,
    IReadOnlyList<RoundReport> Rounds,
    double PlannedEpsilon,
    double Epsilon,
    double Delta,
    double NoiseMultiplier,
    double ClipNorm,
    int Threshold,
    string AdapterSha256,
    IReadOnlyList<CanaryReport> Canaries,
    double? NoDpEvalLoss,
    double Seconds);

/// <summary>
/// The one-command demo: an ephemeral federation CA, a real coordinator on a loopback port with mutual TLS, N edge
/// clients (in this process, each with its own identity, mTLS channel, local policy and ledger) training a LoRA
/// adapter on private non-IID text, distributed Skellam noise under SecAgg+, a budget set by the officer and the
/// run started and watched by the engineer over the admin service.
/// </summary>
internal sealed class FederationSimulation(SimulationOptions options, Action<string> progress)
{
    private const string Population = "default";
    private const int BatchSize = 4;
    private const int MaxSequenceLength = 128;
    private const double TinyInitStd = 0.1;

    private readonly ConcurrentDictionary<(uint Round, string Client), RoundWorkResult> _work = new();
    private readonly ConcurrentQueue<string> _stopped = new();

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
        using (FederationPki authority = FederationPki.CreateCa(pki, TimeProvider.System))
        {
            authority.IssueServer(pki, [], password: null);
            authority.IssueIdentity(pki, "engineer", FederationRole.Engineer, password: null);
            authority.IssueIdentity(pki, "officer", FederationRole.Officer, password: null);
            foreach (string name in names)
            {
                authority.IssueIdentity(pki, name, FederationRole.Client, password: null);
            }
        }
        string ca = Path.Combine(pki, FederationPki.CaCertificateFile);

        string model = options.Model is { } given ? Path.GetFullPath(given) : WriteTinyModel(Path.Combine(root, "tiny-llama"));
        LlamaConfig config = LoadConfig(model);
        using HuggingFaceTokenizer tokenizer = LoadTokenizer(model, config);

        IReadOnlyList<ClientData> data = options.Data is { } dir ? SimulationData.FromDirectory(dir, names) : SimulationData.Synthetic(names, options.Seed);
        CanaryFormat format = CanaryFormat.Default;
        string[] secrets = [.. Enumerable.Range(0, options.Canaries).Select(_ => format.RandomSecret())];
        if (secrets.Length > 0)
        {
            data = [SimulationData.WithCanaries(data[0], [.. secrets.Select(format.Text)], options.CanaryRepeats), .. data.Skip(1)];
            progress($"planted {secrets.Length} canaries '{format.Prefix}<{format.Digits} random digits>' {options.CanaryRepeats} times each in {data[0].Name}'s training data");
        }
        var datasetOptions = new DatasetOptions { MaxLength = Math.Min(MaxSequenceLength, config.MaxPositionEmbeddings) };
        var train = new Dictionary<string, IReadOnlyList<TokenBatch>>(StringComparer.Ordinal);
        var eval = new Dictionary<string, IReadOnlyList<TokenBatch>>(StringComparer.Ordinal);
        foreach (ClientData client in data)
        {
            train[client.Name] = Batches(client.TrainLines, client.Source, tokenizer, datasetOptions, shuffle: true);
            eval[client.Name] = Batches(client.EvalLines, client.Source + " (held out)", tokenizer, datasetOptions, shuffle: false);
            progress($"{client.Name}: {client.TrainLines.Count} training and {client.EvalLines.Count} held-out examples ({client.Source})");
        }

        string state = Path.Combine(root, "coordinator.db");
        // Stored adapters are encrypted at rest, as a production coordinator's should be.
        string atRestKey = Path.Combine(pki, Coordinator.Storage.AtRestCipher.DefaultFileName);
        Coordinator.Storage.AtRestCipher.CreateKeyFile(atRestKey);
        await using CoordinatorHost host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = pki, Port = 0, Address = "127.0.0.1", State = state, HeartbeatIntervalSeconds = 1, AtRestKey = atRestKey },
            logging => logging.AddSimpleConsole(o => o.SingleLine = true).AddFilter((_, level) => level >= LogLevel.Warning)
                .Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace));
        await host.StartAsync(cancellationToken);
        progress($"coordinator listening on {host.Address} (mutual TLS, federation CA only; adapters encrypted at rest)");

        using var stopClients = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        string policy = WritePolicy(root);
        Task[] clients = [.. names.Select(name => Task.Run(() => ClientAsync(name, host.Address, pki, ca, model, policy, train[name], root, stopClients.Token), CancellationToken.None))];
        try
        {
            return await DriveRunAsync(host, pki, ca, model, tokenizer, format, secrets, train, eval, state, outDirectory, clients, clock, cancellationToken);
        }
        finally
        {
            await stopClients.CancelAsync();
            await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        }
    }

    private async Task<SimulationResult> DriveRunAsync(CoordinatorHost host, string pki, string ca, string model, HuggingFaceTokenizer tokenizer, CanaryFormat format,
        string[] secrets, Dictionary<string, IReadOnlyList<TokenBatch>> train, Dictionary<string, IReadOnlyList<TokenBatch>> eval, string state, string outDirectory,
        Task[] clients, System.Diagnostics.Stopwatch clock, CancellationToken cancellationToken)
    {
        using EdgeIdentity officer = EdgeIdentity.Load(Path.Combine(pki, "officer.pfx"), ca);
        using var asOfficer = new CoordinatorConnection(host.Address, officer);
        var officerAdmin = new AdminService.AdminServiceClient(asOfficer.Channel);
        using EdgeIdentity engineer = EdgeIdentity.Load(Path.Combine(pki, "engineer.pfx"), ca);
        using var asEngineer = new CoordinatorConnection(host.Address, engineer);
        var admin = new AdminService.AdminServiceClient(asEngineer.Channel);

        RunPlan plan = Plan(model);
        // The officer's budget is what this plan needs: the coordinator prices the plan and would refuse anything more.
        double planned = PlannedEpsilon(plan);
        // Rounded up to three significant digits, as an officer would write it.
        double scale = Math.Pow(10, Math.Floor(Math.Log10(planned)) - 2);
        double budget = Math.Max(Math.Ceiling(planned / scale) * scale, planned * (1 + 1e-9));
        await officerAdmin.SetBudgetAsync(new SetBudgetRequest { Population = Population, Epsilon = budget, Delta = options.Delta }, asOfficer.Call(cancellationToken));
        progress($"officer set the budget of population '{Population}': epsilon {budget:G4} at delta {options.Delta:G3}");
        await WaitForClientsAsync(host, options.Clients, clients, cancellationToken);
        StartRunResponse started = await admin.StartRunAsync(new StartRunRequest { Plan = plan }, asEngineer.Call(cancellationToken));
        progress($"engineer started {started.RunId}: {options.Rounds} rounds of {options.Clients} clients, distributed Skellam noise (z = {started.NoiseMultiplier:G3}, C = {options.ClipNorm:G3}) under SecAgg+, planned epsilon {started.PlannedEpsilon:G4}");

        using LlamaForCausalLM evaluator = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        string scratch = Path.Combine(Path.GetDirectoryName(state)!, "eval");
        var reports = new List<RoundReport>();
        string initialSha = (await admin.GetRunStatusAsync(new GetRunStatusRequest { RunId = started.RunId }, asEngineer.Call(cancellationToken))).AdapterSha256;
        LoadAdapter(host, initialSha, evaluator, Path.Combine(scratch, "round-0"));
        var baseline = new RoundReport(0, double.NaN, MeanEvalLoss(evaluator, eval), 0, 0, 0, 0, Released: true);
        reports.Add(baseline);
        RoundFinished?.Invoke(baseline);

        RunStatus last = await WatchAsync(admin, asEngineer, officerAdmin, asOfficer, started.RunId, host, state, evaluator, eval, scratch, reports, cancellationToken);
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
        await Export(new SimulationExport(host, started.RunId, outDirectory, asEngineer, admin, ca), cancellationToken);

        IReadOnlyList<CanaryReport> canaries = [];
        double? noDpEval = null;
        if (secrets.Length > 0)
        {
            (canaries, noDpEval) = await AuditCanariesAsync(host, model, tokenizer, format, secrets, train, eval, initialSha, outDirectory, scratch, cancellationToken);
        }
        return new SimulationResult(started.RunId, reports, started.PlannedEpsilon, epsilon, options.Delta, started.NoiseMultiplier, options.ClipNorm,
            checked((int)plan.MinSurvivors), last.AdapterSha256, canaries, noDpEval, clock.Elapsed.TotalSeconds);
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
            NoiseMultiplier = options.NoiseMultiplier,
            Delta = options.Delta,
            Population = Population,
            // t = n: the survivors' noise shares add up to exactly z C; with t < n each client would add sqrt(n / t) times more.
            MinSurvivors = (uint)options.Clients,
        };
        plan.TargetModules.Add(options.Targets);
        return plan;
    }

    /// <summary>
    /// The epsilon the coordinator will charge for the plan, computed as RunOrchestrator prices it: the distributed
    /// Skellam RDP of the calibrated per-round plan (Agarwal et al. 2021, Thm 3.5), composed over the rounds and
    /// converted as in Opacus. If this ever disagreed with the coordinator, StartRun would refuse and name both numbers.
    /// </summary>
    private double PlannedEpsilon(RunPlan plan)
    {
        int dimension = GlobalAdapter.Create(plan.BaseModel, new LoraSettings(Rank: options.Rank, Alpha: 2.0 * options.Rank,
            TargetModules: [.. options.Targets], InitSeed: 1, FreezeA: true)).BDimension;
        var dskellam = DSkellamPlan.Calibrate(new DSkellamParameters(dimension, RunOrchestrator.RingBits, plan.ClipNorm, plan.NoiseMultiplier,
            (int)plan.ClientsPerRound, (int)plan.MinSurvivors));
        double[] rdp = dskellam.RdpPerRound(RdpOrders.Default);
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] *= plan.Rounds;
        }
        return RdpAnalysis.Epsilon(RdpOrders.Default, rdp, plan.Delta).Epsilon;
    }

    private async Task<RunStatus> WatchAsync(AdminService.AdminServiceClient admin, CoordinatorConnection asEngineer, AdminService.AdminServiceClient officerAdmin,
        CoordinatorConnection asOfficer, string runId, CoordinatorHost host, string state, LlamaForCausalLM evaluator, Dictionary<string, IReadOnlyList<TokenBatch>> eval,
        string scratch, List<RoundReport> reports, CancellationToken cancellationToken)
    {
        using AsyncServerStreamingCall<RunStatus> watch = admin.WatchRun(new WatchRunRequest { RunId = runId }, new CallOptions(cancellationToken: cancellationToken));
        RunStatus? last = null;
        int reported = 0;
        int announced = 0;
        await foreach (RunStatus status in watch.ResponseStream.ReadAllAsync(cancellationToken))
        {
            last = status;
            if (status.State == RunState.Running && status.CurrentRound > announced)
            {
                announced = (int)status.CurrentRound;
                progress($"round {announced}: {status.Selected} clients selected; training locally, then SecAgg+");
            }
            reported = await ReportEndedRoundsAsync(officerAdmin, asOfficer, runId, host, state, evaluator, eval, scratch, reports, reported, cancellationToken);
        }
        await ReportEndedRoundsAsync(officerAdmin, asOfficer, runId, host, state, evaluator, eval, scratch, reports, reported, cancellationToken);
        return last ?? throw new InvalidOperationException("WatchRun ended without a status");
    }

    /// <summary>Reports every round that ended since the last call, in order; returns the last round reported.</summary>
    private async Task<int> ReportEndedRoundsAsync(AdminService.AdminServiceClient officerAdmin, CoordinatorConnection asOfficer, string runId, CoordinatorHost host,
        string state, LlamaForCausalLM evaluator, Dictionary<string, IReadOnlyList<TokenBatch>> eval, string scratch, List<RoundReport> reports, int reported,
        CancellationToken cancellationToken)
    {
        IReadOnlyList<EndedRound> ended = EndedRounds(state, runId, reported);
        if (ended.Count == 0)
        {
            return reported;
        }
        LedgerEntry[] ledger = [.. (await officerAdmin.GetLedgerAsync(new GetLedgerRequest { RunId = runId }, asOfficer.Call(cancellationToken))).Entries];
        foreach (EndedRound round in ended)
        {
            LedgerEntry? charge = ledger.FirstOrDefault(l => l.Round == round.Round);
            double epsilon = ledger.Where(l => l.Round <= round.Round).Select(l => l.EpsilonAfter).DefaultIfEmpty(0).Max();
            double evalLoss = reports[^1].EvalLoss;
            if (round.AdapterAfter is { } sha)
            {
                evalLoss = LoadAdapter(host, sha, evaluator, Path.Combine(scratch, $"round-{round.Round}")) ? MeanEvalLoss(evaluator, eval) : double.NaN;
            }
            double trainLoss = await MeanTrainLossAsync((uint)round.Round, round.Survivors, cancellationToken);
            int participants = charge is null ? 0 : (int)charge.Participants;
            var report = new RoundReport(round.Round, trainLoss, evalLoss, epsilon, participants, round.Selected - participants, round.Seconds, charge is not null);
            reports.Add(report);
            RoundFinished?.Invoke(report);
            reported = round.Round;
        }
        return reported;
    }

    private sealed record EndedRound(int Round, int Selected, int Survivors, string? AdapterAfter, double Seconds);

    /// <summary>Rounds of the run that have ended (released or failed) after <paramref name="after"/>, read from the coordinator's state.</summary>
    private static List<EndedRound> EndedRounds(string state, string runId, int after)
    {
        using SqliteConnection connection = CoordinatorState.OpenReadOnly(state);
        using SqliteCommand command = connection.CreateCommand();
        command.CommandText = "SELECT round, selected, survivors, adapter_sha256_after, started_at, ended_at FROM rounds WHERE run_id = $run AND round > $after AND ended_at IS NOT NULL ORDER BY round";
        command.Parameters.AddWithValue("$run", runId);
        command.Parameters.AddWithValue("$after", after);
        using SqliteDataReader reader = command.ExecuteReader();
        var rounds = new List<EndedRound>();
        while (reader.Read())
        {
            DateTimeOffset start = DateTimeOffset.Parse(reader.GetString(4), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
            DateTimeOffset end = DateTimeOffset.Parse(reader.GetString(5), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);
            rounds.Add(new EndedRound(reader.GetInt32(0), reader.GetInt32(1), reader.GetInt32(2), reader.IsDBNull(3) ? null : reader.GetString(3), (end - start).TotalSeconds));
        }
        // Rounds end in order; a gap means a later round ended before this read saw an earlier one, so wait for it.
        int expected = after + 1;
        return [.. rounds.TakeWhile(r => r.Round == expected++)];
    }

    /// <summary>Mean over the round's participants of their last local step's training loss.</summary>
    private async Task<double> MeanTrainLossAsync(uint round, int survivors, CancellationToken cancellationToken)
    {
        // A client's result is recorded when its last SecAgg+ reply returns, which may trail the coordinator's release a little.
        for (int i = 0; i < 100 && _work.Keys.Count(k => k.Round == round) < survivors; i++)
        {
            await Task.Delay(50, cancellationToken);
        }
        double[] losses = [.. _work.Where(w => w.Key.Round == round && w.Value.Participated).Select(w => w.Value.LastLoss)];
        return losses.Length == 0 ? double.NaN : losses.Average();
    }

    private async Task ClientAsync(string name, Uri address, string pki, string ca, string model, string policyPath, IReadOnlyList<TokenBatch> batches,
        string root, CancellationToken cancellationToken)
    {
        try
        {
            string home = Path.Combine(root, "clients", name);
            Directory.CreateDirectory(home);
            using EdgeIdentity identity = EdgeIdentity.Load(Path.Combine(pki, name + ".pfx"), ca);
            using var connection = new CoordinatorConnection(address, identity);
            using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(Path.Combine(home, LocalPrivacyLedger.FileName));
            using LlamaForCausalLM local = LlamaForCausalLM.FromPretrained(model, torch.CPU);
            var gate = new LocalPolicyGate(LocalPolicy.Load(policyPath), ledger, TimeProvider.System);
            var worker = new EdgeRoundWorker(connection, name, local, batches, gate, Path.Combine(home, "scratch"))
            {
                Log = options.Verbose ? line => progress($"{name}: {line}") : null,
            };
            var session = new EdgeSession(connection, new RegisterRequest { ClientVersion = "simulate", Device = "cpu" });
            await session.RunAsync(async (invitation, ct) =>
            {
                try
                {
                    RoundWorkResult result = await worker.HandleAsync(invitation, ct);
                    _work[(result.Round, name)] = result;
                }
                catch (Exception ex) when ((ex is RpcException or InvalidDataException or InvalidOperationException) && !ct.IsCancellationRequested)
                {
                    // One client's failure is a dropout for the round, as it would be on a real network.
                    progress($"{name}: round {invitation.Round} failed on this client: {ex.Message}");
                }
            }, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The simulation is over.
        }
        catch (RpcException ex) when (cancellationToken.IsCancellationRequested && ex.StatusCode == StatusCode.Cancelled)
        {
            // The simulation is over.
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            _stopped.Enqueue($"{name}: {ex.Message}");
            progress($"{name}: stopped: {ex.Message}");
        }
    }

    private async Task WaitForClientsAsync(CoordinatorHost host, int count, Task[] clients, CancellationToken cancellationToken)
    {
        // The run would wait for them too; waiting here keeps round 1's time about the round, not about start-up.
        DateTimeOffset giveUp = DateTimeOffset.UtcNow.AddMinutes(2);
        while (host.State.ListClients(TimeSpan.FromSeconds(3)).Count(c => c.Available) < count)
        {
            if (clients.Any(c => c.IsCompleted))
            {
                throw new InvalidOperationException($"an edge client stopped before the run: {_stopped.FirstOrDefault() ?? "no reason given"}");
            }
            if (DateTimeOffset.UtcNow > giveUp)
            {
                throw new TimeoutException($"only {host.State.ListClients(TimeSpan.FromSeconds(3)).Count(c => c.Available)} of {count} edge clients registered within 2 minutes");
            }
            await Task.Delay(100, cancellationToken);
        }
        progress($"{count} edge clients registered over mutual TLS");
    }

    /// <summary>Applies the stored, signed global adapter <paramref name="sha256"/> to the evaluator (replacing any adapter).</summary>
    private static bool LoadAdapter(CoordinatorHost host, string sha256, LlamaForCausalLM evaluator, string folder)
    {
        if (host.Adapters.Read(sha256) is not { } content)
        {
            return false;
        }
        GlobalAdapterFile.WriteFolder(content, folder);
        if (evaluator.Lora is not null)
        {
            evaluator.RemoveLora();
        }
        PeftAdapter.Apply(folder, evaluator);
        return true;
    }

    /// <summary>Mean over clients of each client's mean token loss on its own held-out split.</summary>
    private static double MeanEvalLoss(LlamaForCausalLM model, Dictionary<string, IReadOnlyList<TokenBatch>> eval) =>
        eval.Values.Average(batches => ModelEvaluator.Evaluate(model, batches).MeanLoss);

    private async Task<(IReadOnlyList<CanaryReport>, double)> AuditCanariesAsync(CoordinatorHost host, string model, HuggingFaceTokenizer tokenizer, CanaryFormat format,
        string[] secrets, Dictionary<string, IReadOnlyList<TokenBatch>> train, Dictionary<string, IReadOnlyList<TokenBatch>> eval, string initialSha, string outDirectory,
        string scratch, CancellationToken cancellationToken)
    {
        IReadOnlyList<string> candidates = CanaryExposure.SampleCandidates(format, options.CanaryCandidates, secrets);
        progress($"memorisation audit: ranking each canary against {candidates.Count} random secrets with the exported adapter");
        IReadOnlyList<CanaryExposureResult> withDp;
        using (LlamaForCausalLM dpModel = LlamaForCausalLM.FromPretrained(model, torch.CPU))
        {
            PeftAdapter.Apply(outDirectory, dpModel);
            withDp = CanaryExposure.Measure(dpModel, tokenizer, format, secrets, candidates, cancellationToken);
        }

        progress($"training the comparison without DP: the same clients, data, rounds, steps and learning rate, plain federated averaging (no clipping, no noise, no SecAgg)");
        string initialFolder = Path.Combine(scratch, "no-dp-initial");
        using LlamaForCausalLM plain = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        if (!LoadAdapter(host, initialSha, plain, initialFolder))
        {
            throw new InvalidOperationException($"the run's initial adapter {initialSha} is not in the coordinator's store");
        }
        await Task.Run(() => NoiselessFederatedAveraging.Train(plain, [.. train.Values], options.Rounds, options.LocalSteps, options.LearningRate, cancellationToken), cancellationToken);
        double noDpEval = MeanEvalLoss(plain, eval);
        IReadOnlyList<CanaryExposureResult> withoutDp = CanaryExposure.Measure(plain, tokenizer, format, secrets, candidates, cancellationToken);
        return ([.. secrets.Select((s, i) => new CanaryReport(s, withDp[i], withoutDp[i]))], noDpEval);
    }

    private static IReadOnlyList<TokenBatch> Batches(IReadOnlyList<string> lines, string source, ITextTokenizer tokenizer, DatasetOptions datasetOptions, bool shuffle)
    {
        JsonlDataset dataset;
        try
        {
            dataset = JsonlDataset.Parse(lines, source, tokenizer, datasetOptions);
        }
        catch (InvalidDataException ex)
        {
            throw new UsageException($"--data: {ex.Message}");
        }
        if (dataset.Examples.Count == 0)
        {
            throw new UsageException($"--data: {source} has no usable example");
        }
        return TokenBatcher.Batches(dataset.Examples, BatchSize, tokenizer.PadId, shuffleSeed: shuffle ? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)) : null);
    }

    private string WriteTinyModel(string directory)
    {
        int vocab = ByteLevelTokenizerWriter.Write(directory);
        // transformers' default std of 0.02 caps a 64-wide model's logits near +-1.3 behind the final RMSNorm (|w| |h| =
        // 0.02 * 8 * 8), so no adapter could make any character likely; a wider init lets the adapter learn and memorise.
        TinyLlamaFactory.Write(directory, TinyLlamaFactory.DefaultConfig(vocabSize: vocab), options.Seed, initStd: TinyInitStd);
        progress($"wrote a random tiny Llama (2 layers, hidden 64, byte-level tokenizer) to {directory}");
        return directory;
    }

    private static LlamaConfig LoadConfig(string model)
    {
        try
        {
            return LlamaConfig.Load(model);
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or ArgumentException or InvalidOperationException or System.Text.Json.JsonException)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
    }

    private static HuggingFaceTokenizer LoadTokenizer(string model, LlamaConfig config)
    {
        HuggingFaceTokenizer tokenizer;
        try
        {
            tokenizer = HuggingFaceTokenizer.Load(model);
        }
        catch (TokenizerLoadException ex)
        {
            throw new UsageException($"--model: {ex.Message}");
        }
        if (tokenizer.VocabSize > config.VocabSize)
        {
            tokenizer.Dispose();
            throw new UsageException($"--model: the tokenizer has {tokenizer.VocabSize} ids but config.json's vocab_size is {config.VocabSize}");
        }
        return tokenizer;
    }

    /// <summary>The clients' local policy: it allows this demo's plan and nothing looser (minimum noise = the plan's noise).</summary>
    private string WritePolicy(string root)
    {
        string path = Path.Combine(root, LocalPolicy.FileName);
        string json = System.Text.Json.JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["delta"] = options.Delta,
            // The edge accounts for itself (Gaussian RDP of z at sampling rate 1), whatever the coordinator claims.
            // A demo with a handful of clients spends a lot (see the README); these are the policy format's upper limits.
            ["max_epsilon_per_run"] = 100,
            ["max_epsilon_lifetime"] = 1000,
            ["min_noise_multiplier"] = options.NoiseMultiplier,
            ["allowed_mechanisms"] = new[] { "distributed_skellam" },
            ["allowed_target_modules"] = options.Targets,
            ["max_rank"] = options.Rank,
            ["max_rounds_per_day"] = 100_000,
        });
        File.WriteAllText(path, json);
        return path;
    }
}

/// <summary>What the exporter needs: the running coordinator, the run, the target folder and the engineer's channel.</summary>
internal sealed record SimulationExport(CoordinatorHost Host, string RunId, string OutDirectory, CoordinatorConnection AsEngineer, AdminService.AdminServiceClient Admin, string CaPath);
