using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Wire;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Federated.Coordinator.Cli;

/// <summary>Engineer: starts a run; the coordinator prices it with its accountant and refuses a plan the budget cannot afford.</summary>
internal sealed class RunStartCommand : AsyncCommand<RunStartCommand.Settings>
{
    public sealed class Settings : AdminSettings
    {
        [CommandOption("--base-model <DIR>")]
        public string? BaseModel { get; init; }

        [CommandOption("--rank <R>")]
        public string? Rank { get; init; }

        [CommandOption("--targets <LIST>")]
        public string? Targets { get; init; }

        [CommandOption("--rounds <T>")]
        public string? Rounds { get; init; }

        [CommandOption("--clients-per-round <N>")]
        public string? ClientsPerRound { get; init; }

        [CommandOption("--sampling-rate <Q>")]
        public string? SamplingRate { get; init; }

        [CommandOption("--local-steps <N>")]
        public string? LocalSteps { get; init; }

        [CommandOption("--learning-rate <LR>")]
        public string? LearningRate { get; init; }

        [CommandOption("--clip-norm <C>")]
        public string? ClipNorm { get; init; }

        [CommandOption("--mechanism <distributed|central>")]
        public string? Mechanism { get; init; }

        // --noise-multiplier is the name every other command (privacy, simulate) uses; --noise stays as an alias.
        [CommandOption("--noise-multiplier|--noise <Z>")]
        [System.ComponentModel.Description("Noise multiplier z (or give --target-epsilon and let the coordinator find z).")]
        public string? Noise { get; init; }

        [CommandOption("--stage-timeout <SECONDS>")]
        [System.ComponentModel.Description("Seconds each round stage stays open at most (the first also covers local training); default: the coordinator's (60).")]
        public string? StageTimeout { get; init; }

        [CommandOption("--target-epsilon <E>")]
        public string? TargetEpsilon { get; init; }

        [CommandOption("--delta <D>")]
        public string? Delta { get; init; }

        [CommandOption("--population <NAME>")]
        public string? Population { get; init; }

        [CommandOption("--min-survivors <T>")]
        public string? MinSurvivors { get; init; }

        [CommandOption("--privacy-unit <client|record|both>")]
        [System.ComponentModel.Description("client (default): noise on the aggregate protects each client; record: DP-SGD at every edge protects each record "
            + "(no client-level noise or charge); both.")]
        public string? PrivacyUnit { get; init; }

        [CommandOption("--record-noise <Z>")]
        [System.ComponentModel.Description("DP-SGD noise multiplier at every edge (with --privacy-unit record or both).")]
        public string? RecordNoise { get; init; }

        [CommandOption("--record-clip <C>")]
        [System.ComponentModel.Description("DP-SGD per-record L2 clip norm at every edge (with --privacy-unit record or both).")]
        public string? RecordClip { get; init; }

        [CommandOption("--batch-size <B>")]
        [System.ComponentModel.Description("Expected records per local DP-SGD step (with --privacy-unit record or both; default 4): each holder samples at rate B / its record count.")]
        public string? BatchSize { get; init; }
    }

    public override async Task<int> ExecuteAsync(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        RunPlan plan = Plan(settings);
        AdminEndpoint endpoint = AdminEndpoint.Resolve(settings);
        using AdminConnection connection = AdminConnection.Open(endpoint);
        StartRunResponse started = await connection.CallAsync(o => connection.Admin.StartRunAsync(new StartRunRequest { Plan = plan }, o), cancellationToken);
        if (started.ClientsOnline < started.ClientsNeeded)
        {
            // Started, but it will sit pending: say so now rather than leave the operator to wonder at "0 of 0 selected".
            Console.Error.WriteLine($"coordinator: warning: {started.ClientsOnline} client(s) of population '{(plan.Population.Length == 0 ? "default" : plan.Population)}' " +
                $"are online and free, and a round needs {started.ClientsNeeded}; the run waits until they connect (run status shows the count)");
        }
        if (settings.Json)
        {
            AdminOutput.Json(new
            {
                RunId = started.RunId,
                PlannedEpsilon = started.PlannedEpsilon,
                NoiseMultiplier = started.NoiseMultiplier,
                Delta = plan.Delta,
                // The run's unit (client, record or both); planned_epsilon is client-level (0 for a record-only run).
                PrivacyUnit = PrivacyUnitWire.Name(plan.PrivacyUnit),
                Adjacency = started.Adjacency,
                RecordNoiseMultiplier = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit) ? plan.RecordNoiseMultiplier : (double?)null,
                RecordMaxGradNorm = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit) ? plan.RecordMaxGradNorm : (double?)null,
                RecordExpectedBatch = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit) ? plan.RecordExpectedBatch : (uint?)null,
                Mechanism = WireNames.Mechanism(plan.Mechanism),
                EpsilonReserved = started.EpsilonReserved,
                Rounds = plan.Rounds,
                ClientsPerRound = plan.ClientsPerRound,
                Population = plan.Population.Length == 0 ? "default" : plan.Population,
                ClientsOnline = started.ClientsOnline,
                ClientsNeeded = started.ClientsNeeded,
            });
        }
        else
        {
            AdminOutput.Terminal().Write(AdminOutput.Properties(
            [
                ("run", started.RunId),
                ("privacy unit", PrivacyUnitWire.Name(plan.PrivacyUnit) + (PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit)
                    ? $": DP-SGD at every edge, noise multiplier {AdminOutput.Number(plan.RecordNoiseMultiplier)}, clip {AdminOutput.Number(plan.RecordMaxGradNorm)}, "
                        + $"expected batch {plan.RecordExpectedBatch} (each holder's ledger prices its record epsilon at its own record count)"
                    : "")),
                ("planned epsilon", PrivacyUnitWire.HasClientLevel(plan.PrivacyUnit)
                    ? $"{AdminOutput.Number(started.PlannedEpsilon)} {AdminOutput.StatedFor(plan.Delta, started.PrivacyUnit, started.Adjacency)}, after {plan.Rounds} rounds"
                    : "none client-level: a record-only run adds no client-level noise and charges no budget"),
                ("mechanism", WireNames.Mechanism(plan.Mechanism)),
                ("population reserved", $"{AdminOutput.Number(started.EpsilonReserved)} of its budget now reserved by running runs (this one included)"),
                ("noise multiplier", AdminOutput.Number(started.NoiseMultiplier)),
                ("population", plan.Population.Length == 0 ? "default" : plan.Population),
            ]));
            Console.Out.WriteLine($"watch it with: coordinator run status {started.RunId} --watch");
        }
        return CliRunner.Ok;
    }

    /// <summary>Builds the plan from the flags, refusing bad ones before anything is sent.</summary>
    internal static RunPlan Plan(Settings settings)
    {
        if (string.IsNullOrWhiteSpace(settings.BaseModel))
        {
            throw new UsageException("--base-model DIR is required: the base model folder on the coordinator host");
        }
        var plan = new RunPlan
        {
            BaseModel = settings.BaseModel,
            LoraRank = AdminArguments.OptionalInteger(settings.Rank, "--rank", 1, 256) ?? 8,
            Rounds = AdminArguments.Integer(settings.Rounds, "--rounds", 1, 10_000),
            LocalSteps = AdminArguments.OptionalInteger(settings.LocalSteps, "--local-steps", 1, 100_000) ?? 10,
            LearningRate = AdminArguments.OptionalNumber(settings.LearningRate, "--learning-rate", "> 0", v => v > 0) ?? 1e-3,
            ClipNorm = AdminArguments.OptionalNumber(settings.ClipNorm, "--clip-norm", "> 0", v => v > 0) ?? 1.0,
            Mechanism = settings.Mechanism switch
            {
                null or "distributed" => NoiseMechanism.DistributedSkellam,
                "central" => NoiseMechanism.CentralGaussian,
                _ => throw new UsageException($"--mechanism must be distributed or central, got '{settings.Mechanism}'"),
            },
            Delta = AdminArguments.Number(settings.Delta, "--delta", "in (0, 1)", v => v > 0 && v < 1),
            Population = AdminArguments.Population(settings.Population),
        };
        foreach (string target in Targets(settings.Targets))
        {
            plan.TargetModules.Add(target);
        }

        if ((settings.ClientsPerRound is null) == (settings.SamplingRate is null))
        {
            throw new UsageException("give exactly one of --clients-per-round N (2..1000) and --sampling-rate Q (in (0, 1])");
        }
        if (settings.ClientsPerRound is not null)
        {
            plan.ClientsPerRound = AdminArguments.Integer(settings.ClientsPerRound, "--clients-per-round", 2, 1000);
        }
        else
        {
            plan.SamplingRate = AdminArguments.Number(settings.SamplingRate, "--sampling-rate", "in (0, 1]", v => v > 0 && v <= 1);
        }

        ApplyPrivacyUnit(settings, plan);
        if (plan.PrivacyUnit == PrivacyUnit.Record)
        {
            // No client-level mechanism: the aggregate carries no client noise, so there is no client-level z or target.
            if (settings.Noise is not null || settings.TargetEpsilon is not null)
            {
                throw new UsageException("--privacy-unit record has no client-level noise: leave out --noise-multiplier and --target-epsilon (use both for client-level noise too)");
            }
        }
        else if ((settings.Noise is null) == (settings.TargetEpsilon is null))
        {
            throw new UsageException("give exactly one of --noise-multiplier Z (> 0; alias --noise) and --target-epsilon E (> 0)");
        }
        if (settings.Noise is not null)
        {
            plan.NoiseMultiplier = AdminArguments.Number(settings.Noise, "--noise-multiplier", "> 0", v => v > 0);
        }
        else if (settings.TargetEpsilon is not null)
        {
            plan.TargetEpsilon = AdminArguments.Number(settings.TargetEpsilon, "--target-epsilon", "> 0", v => v > 0);
        }

        if (AdminArguments.OptionalInteger(settings.StageTimeout, "--stage-timeout", 10, 86_400) is { } timeout)
        {
            plan.StageTimeoutSeconds = timeout;
        }
        if (AdminArguments.OptionalInteger(settings.MinSurvivors, "--min-survivors", 2, 1000) is { } survivors)
        {
            if (plan.ClientsPerRound != 0 && (survivors > plan.ClientsPerRound || survivors < RunPlanValidation.MinThreshold((int)plan.ClientsPerRound)))
            {
                throw new UsageException(
                    $"--min-survivors must be in {RunPlanValidation.MinThreshold((int)plan.ClientsPerRound)}..{plan.ClientsPerRound} (above half of --clients-per-round, at most all), got {survivors}");
            }
            plan.MinSurvivors = survivors;
        }
        return plan;
    }

    private static void ApplyPrivacyUnit(Settings settings, RunPlan plan)
    {
        plan.PrivacyUnit = settings.PrivacyUnit is null ? PrivacyUnit.Client
            : PrivacyUnitWire.Parse(settings.PrivacyUnit) ?? throw new UsageException($"--privacy-unit must be client, record or both, got '{settings.PrivacyUnit}'");
        if (!PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit))
        {
            string? stray = settings.RecordNoise is not null ? "--record-noise" : settings.RecordClip is not null ? "--record-clip" : settings.BatchSize is not null ? "--batch-size" : null;
            if (stray is not null)
            {
                throw new UsageException($"{stray} applies only with --privacy-unit record or both");
            }
            return;
        }
        if (settings.RecordNoise is null || settings.RecordClip is null)
        {
            throw new UsageException($"--privacy-unit {settings.PrivacyUnit} needs --record-noise Z (> 0) and --record-clip C (> 0)");
        }
        plan.RecordNoiseMultiplier = AdminArguments.Number(settings.RecordNoise, "--record-noise", "> 0", v => v > 0);
        plan.RecordMaxGradNorm = AdminArguments.Number(settings.RecordClip, "--record-clip", "> 0", v => v > 0);
        plan.RecordExpectedBatch = AdminArguments.OptionalInteger(settings.BatchSize, "--batch-size", 1, RunPlanValidation.MaxRecordExpectedBatch) ?? 4;
    }

    private static IReadOnlyList<string> Targets(string? text)
    {
        if (text is null)
        {
            return [];
        }
        string[] targets = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (targets.Length == 0)
        {
            throw new UsageException($"--targets must list modules, e.g. q_proj,v_proj (allowed: {string.Join(", ", LoraSettings.AllProjections)})");
        }
        foreach (string target in targets)
        {
            if (!LoraSettings.AllProjections.Contains(target))
            {
                throw new UsageException($"--targets: '{target}' is not one of {string.Join(", ", LoraSettings.AllProjections)}");
            }
        }
        if (targets.Distinct(StringComparer.Ordinal).Count() != targets.Length)
        {
            throw new UsageException($"--targets lists a module twice: '{text}'");
        }
        return targets;
    }
}
