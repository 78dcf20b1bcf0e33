using Federated.Training.Lora;

namespace Federated.Simulation;

/// <summary>
/// Everything a simulation needs, validated once. The defaults are tuned so that 4 clients and 5 rounds finish in
/// well under two minutes on two CPU cores and the held-out loss falls visibly under distributed DP; they are not a
/// recommendation for real deployments, whose populations are large enough for much more noise per client.
/// </summary>
internal sealed record SimulationOptions
{
    public const int DefaultClients = 4;
    public const int DefaultRounds = 5;
    public const int DefaultLocalSteps = 25;
    public const double DefaultLearningRate = 0.1;
    public const double DefaultNoiseMultiplier = 0.8;
    public const double DefaultClipNorm = 3.0;
    public const double DefaultDelta = 1e-5;
    public const int DefaultRank = 1;
    public const int DefaultCanaryRepeats = 20;
    public const int DefaultCanaryCandidates = 2000;

    // Record-level defaults: 48 synthetic records per client, 4 expected per step (q = 1/12), z = 2 over 5 x 25 steps
    // give record epsilon about 2.4 at delta 1e-5 (the RDP accountant; Mironov, Talwar and Zhang 2019).
    public const double DefaultRecordNoise = 2.0;
    public const double DefaultRecordClip = 1.0;
    public const int DefaultRecordBatch = 4;

    public int Clients { get; init; } = DefaultClients;

    public int Rounds { get; init; } = DefaultRounds;

    /// <summary>Base model folder (Hugging Face layout with tokenizer.json); null makes a random tiny Llama.</summary>
    public string? Model { get; init; }

    /// <summary>Folder of DIR/&lt;client&gt;.jsonl files; null makes synthetic non-IID text.</summary>
    public string? Data { get; init; }

    /// <summary>Seeds the synthetic data and the tiny model (DP noise and SecAgg masks always come from the CSPRNG).</summary>
    public long Seed { get; init; }

    public int Canaries { get; init; }

    /// <summary>How often each canary is inserted into client-1's training data.</summary>
    public int CanaryRepeats { get; init; } = DefaultCanaryRepeats;

    /// <summary>Random secrets each canary is ranked against (the sampled exposure estimate).</summary>
    public int CanaryCandidates { get; init; } = DefaultCanaryCandidates;

    public int LocalSteps { get; init; } = DefaultLocalSteps;

    public double LearningRate { get; init; } = DefaultLearningRate;

    public double NoiseMultiplier { get; init; } = DefaultNoiseMultiplier;

    public double ClipNorm { get; init; } = DefaultClipNorm;

    public double Delta { get; init; } = DefaultDelta;

    public int Rank { get; init; } = DefaultRank;

    /// <summary>client (default), record or both: what the run's DP protects.</summary>
    public string PrivacyUnit { get; init; } = "client";

    /// <summary>DP-SGD noise multiplier at every client (record or both).</summary>
    public double RecordNoise { get; init; } = DefaultRecordNoise;

    /// <summary>DP-SGD per-record clip norm at every client (record or both).</summary>
    public double RecordClip { get; init; } = DefaultRecordClip;

    /// <summary>DP-SGD expected records per local step (record or both).</summary>
    public int RecordBatch { get; init; } = DefaultRecordBatch;

    /// <summary>Whether clients train with DP-SGD and charge their record-level ledgers.</summary>
    public bool RecordLevel => PrivacyUnit is "record" or "both";

    /// <summary>Whether the aggregate carries client-level noise and the client-level budget is charged.</summary>
    public bool ClientLevel => PrivacyUnit is "client" or "both";

    public const string DefaultTargetList = "o_proj,down_proj";

    public static IReadOnlyList<string> DefaultTargets { get; } = DefaultTargetList.Split(',');

    /// <summary>LoRA target modules.</summary>
    public IReadOnlyList<string> Targets { get; init; } = DefaultTargets;

    /// <summary>Print the edge clients' own log lines too.</summary>
    public bool Verbose { get; init; }

    /// <summary>Checks every value, naming it and its allowed range.</summary>
    public void Validate()
    {
        static void Range(string flag, double value, double min, double max)
        {
            if (!(value >= min && value <= max))
            {
                throw new UsageException($"{flag} {value} is out of range: use {min}..{max}");
            }
        }
        Range("--clients", Clients, 2, 64);
        Range("--rounds", Rounds, 1, 1000);
        Range("--canaries", Canaries, 0, 100);
        Range("--canary-repeats", CanaryRepeats, 1, 1000);
        Range("--local-steps", LocalSteps, 1, 10_000);
        Range("--learning-rate", LearningRate, 1e-6, 0.999);
        Range("--noise-multiplier", NoiseMultiplier, 0.01, 100);
        Range("--clip-norm", ClipNorm, 1e-3, 1e3);
        Range("--rank", Rank, 1, 64);
        if (PrivacyUnit is not ("client" or "record" or "both"))
        {
            throw new UsageException($"--privacy-unit '{PrivacyUnit}' is invalid: use client, record or both");
        }
        Range("--record-noise", RecordNoise, 0.01, 100);
        Range("--record-clip", RecordClip, 1e-3, 1e3);
        Range("--batch-size", RecordBatch, 1, 1000);
        if (Targets.Count == 0 || Targets.Any(t => !LoraSettings.AllProjections.Contains(t)))
        {
            throw new UsageException($"--targets '{string.Join(",", Targets)}' is invalid: use a comma-separated subset of {string.Join(",", LoraSettings.AllProjections)}");
        }
        if (CanaryCandidates is < 10 or > 1_000_000)
        {
            throw new UsageException($"canary candidates {CanaryCandidates} is out of range: use 10..1000000");
        }
        if (!(Delta > 0 && Delta < 1))
        {
            throw new UsageException($"delta {Delta} is out of range: use (0, 1)");
        }
        if (Model is not null && !Directory.Exists(Model))
        {
            throw new UsageException($"--model '{Model}' is not a folder");
        }
        if (Data is not null && !Directory.Exists(Data))
        {
            throw new UsageException($"--data '{Data}' is not a folder");
        }
    }
}
