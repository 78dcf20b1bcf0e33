using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Nodes;
using Federated.Coordinator.Pki;
using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Training.Peft;
using Federated.Training.Provenance;
using Federated.Training.SafeTensors;
using Federated.Wire;

namespace Federated.Coordinator.Rounds;

/// <summary>What <see cref="RunExporter.Export"/> wrote: the folder, its files and the figures of its provenance record.</summary>
internal sealed record RunExportSummary(
    string RunId,
    string Directory,
    string AdapterSha256,
    int RoundsPlanned,
    int RoundsReleased,
    double EpsilonSpent,
    double Delta,
    IReadOnlyList<string> Files);

/// <summary>A run cannot be exported: unknown, or its adapter or base model is gone, or the coordinator has no signing identity.</summary>
internal sealed class RunExportException(string message, bool notFound = false) : CoordinatorException(message)
{
    /// <summary>True when the run itself is unknown (NOT_FOUND), false when it exists but cannot be exported (FAILED_PRECONDITION).</summary>
    public bool NotFound { get; } = notFound;
}

/// <summary>
/// Writes a run's latest global adapter as a Hugging Face PEFT folder (adapter_config.json, adapter_model.safetensors),
/// a provenance.json with the privacy figures from the ledger, and a CMS signature (adapter.p7s) over all of them made
/// with the coordinator's code-signing identity, so `edge-client verify-adapter` and anyone holding the federation CA
/// can check the folder byte for byte. Reads only durable state, so runs from before a restart export too.
/// </summary>
internal sealed class RunExporter(CoordinatorState state, AdapterStore adapters, X509Certificate2? signer, TimeProvider time)
{
    /// <summary>The provenance record's file name.</summary>
    public const string ProvenanceFileName = "provenance.json";

    /// <summary>Provenance format version, bumped when a key changes meaning.</summary>
    public const int ProvenanceFormat = 1;


    // Indented for people; '+' (in versions) is left unescaped, the file is never embedded in HTML.
    private static readonly JsonSerializerOptions s_provenanceJson = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
    private const int MaxRunIdLength = 64;

    /// <summary>Exports <paramref name="runId"/> into <paramref name="outDir"/>, which must be absent or empty.</summary>
    /// <exception cref="RunExportException">The run is unknown or cannot be exported (the message says why).</exception>
    /// <exception cref="IOException"><paramref name="outDir"/> is a file or a non-empty folder.</exception>
    public RunExportSummary Export(string runId, string outDir)
    {
        ArgumentNullException.ThrowIfNull(runId);
        ArgumentException.ThrowIfNullOrEmpty(outDir);
        ValidateRunId(runId);
        RunRecord run = state.Runs.Get(runId) ?? throw new RunExportException($"run '{runId}' is not known to this coordinator", notFound: true);
        if (signer is null)
        {
            throw new RunExportException(
                $"the coordinator has no adapter-signing identity ({FederationPki.AdapterSignerName}.pfx in its PKI folder); " +
                "issue one with the root ('coordinator pki issue --pki DIR --adapter-signer') and restart");
        }
        string directory = Path.GetFullPath(outDir);
        if (File.Exists(directory))
        {
            throw new IOException($"'{directory}' is a file; the export needs an empty folder");
        }
        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
        {
            throw new IOException($"'{directory}' is not empty; refusing to mix an export with other files");
        }

        RunPlan plan = RunPlan.Parser.ParseFrom(run.Plan);
        string baseModelSha256 = BaseModelSha256(plan.BaseModel);
        IReadOnlyList<LedgerRecord> ledger = state.Ledger.List(runId, population: null);
        // Released rounds come from the rounds themselves: a record-only run charges no client-level ledger.
        IReadOnlyList<EndedRound> released = [.. state.Rounds.ListEnded(runId, 0).Where(r => r.AdapterSha256After is not null)];
        if (released.Count == 0)
        {
            // The stored adapter is still the initial one (B = 0): exporting it would hand out an untrained model as the run's.
            throw new RunExportException(
                $"run '{runId}' has released no round ({WireNames.State(run.State)}, 0 of {plan.Rounds} rounds), so its adapter is the untrained initial one; export it once a round is released");
        }
        bool created = !Directory.Exists(directory);
        Directory.CreateDirectory(directory);
        try
        {
            string weights = Path.Combine(directory, PeftAdapter.WeightsFileName);
            CopyStoredAdapter(run.AdapterSha256, weights);
            string config = ReadConfig(weights);
            File.WriteAllText(Path.Combine(directory, PeftAdapter.ConfigFileName), config);
            JsonObject lora = LoraSummary(config);

            var provenance = new JsonObject
            {
                ["format"] = ProvenanceFormat,
                ["run_id"] = run.RunId,
                ["run_state"] = WireNames.State(run.State),
                ["population"] = run.Population,
                ["base_model"] = Path.GetFileName(Path.TrimEndingDirectorySeparator(plan.BaseModel)),
                ["base_model_sha256"] = baseModelSha256,
                ["adapter_sha256"] = run.AdapterSha256,
                ["lora"] = lora,
                ["mechanism"] = WireNames.Mechanism(plan.Mechanism),
                ["epsilon_spent"] = ledger.Count == 0 ? 0.0 : ledger[^1].EpsilonAfter,
                ["epsilon_planned"] = run.PlannedEpsilon,
                ["delta"] = plan.Delta,
                // What the epsilons protect and the relation they are stated for (charges recorded before the relation was
                // stored were priced for zero-out).
                // client, record or both; epsilon_* are client-level (0 under record: no client noise, no charge). Record-level
                // epsilons depend on each holder's record count and are kept in the edge ledgers; the parameters are here.
                ["privacy_unit"] = PrivacyUnitWire.Name(plan.PrivacyUnit),
                ["record_noise_multiplier"] = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit) ? plan.RecordNoiseMultiplier : null,
                ["record_max_grad_norm"] = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit) ? plan.RecordMaxGradNorm : null,
                ["record_expected_batch"] = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit) ? plan.RecordExpectedBatch : null,
                ["record_adjacency"] = PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit)
                    ? Aggregation.Privacy.PrivacyUnitNames.Name(Aggregation.Privacy.PrivacyUnitNames.RecordAdjacency) : null,
                ["adjacency"] = ledger.Count == 0 ? Aggregation.Privacy.PrivacyUnitNames.Name(Aggregation.Privacy.PrivacyUnitNames.ProductAdjacency) : ledger[^1].Adjacency ?? "zero-out",
                ["clip_norm"] = plan.ClipNorm,
                ["noise_multiplier"] = run.NoiseMultiplier,
                ["rounds_planned"] = plan.Rounds,
                ["rounds_released"] = released.Count,
                ["clients_per_round"] = plan.ClientsPerRound,
                ["local_steps"] = plan.LocalSteps,
                ["learning_rate"] = plan.LearningRate,
                ["participants_per_round"] = new JsonArray([.. released.Select(r => (JsonNode)new JsonObject
                {
                    ["round"] = r.Round,
                    ["participants"] = r.Survivors,
                    ["epsilon_after"] = ledger.FirstOrDefault(l => l.Round == r.Round)?.EpsilonAfter ?? 0.0,
                })]),
                ["coordinator_version"] = CoordinatorVersion(),
                ["signer"] = signer.Subject,
                ["exported_at"] = time.GetUtcNow().UtcDateTime.ToString("O", CultureInfo.InvariantCulture),
            };
            File.WriteAllText(Path.Combine(directory, ProvenanceFileName), provenance.ToJsonString(s_provenanceJson) + "\n");
            // Signed last, over every file above: a later change to any of them fails verification.
            AdapterSignature.Sign(directory, signer);
            string[] files = [.. Directory.EnumerateFiles(directory).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal)];
            return new RunExportSummary(run.RunId, directory, run.AdapterSha256, (int)plan.Rounds, released.Count,
                ledger.Count == 0 ? 0.0 : ledger[^1].EpsilonAfter, plan.Delta, files);
        }
        catch
        {
            // A half-written export must not look like a finished one.
            DiscardPartial(directory, created);
            throw;
        }
    }

    /// <summary>Run ids come from outside (CLI, RPC): bounded ASCII so they are safe in messages and file names.</summary>
    public static void ValidateRunId(string runId)
    {
        ArgumentNullException.ThrowIfNull(runId);
        if (runId.Length is 0 or > MaxRunIdLength || !runId.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
        {
            throw new ArgumentException($"run id '{Truncate(runId)}' is invalid: use 1-{MaxRunIdLength} characters of A-Z a-z 0-9 - _", nameof(runId));
        }
    }

    private void CopyStoredAdapter(string sha256, string destination)
    {
        (Stream content, long size, _) = adapters.Open(sha256)
            ?? throw new RunExportException($"the run's adapter {sha256} is missing from the coordinator's adapter store");
        using (content)
        using (var output = new FileStream(destination, FileMode.CreateNew, FileAccess.Write, FileShare.None))
        using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            byte[] buffer = new byte[81920];
            int read;
            long total = 0;
            while ((read = content.Read(buffer)) > 0)
            {
                hash.AppendData(buffer, 0, read);
                output.Write(buffer, 0, read);
                total += read;
            }
            output.Flush(flushToDisk: true);
            // The store is content-addressed: a file whose bytes no longer match its name was damaged on disk.
            if (total != size || Convert.ToHexStringLower(hash.GetHashAndReset()) != sha256)
            {
                throw new RunExportException($"the stored adapter {sha256} is damaged (its bytes no longer match its hash)");
            }
        }
    }

    private static string ReadConfig(string weights)
    {
        using var reader = new SafeTensorsReader(weights);
        try
        {
            return GlobalAdapterBlob.Config(reader);
        }
        catch (InvalidDataException ex)
        {
            throw new RunExportException($"the stored adapter cannot be exported: {ex.Message}");
        }
    }

    private static JsonObject LoraSummary(string config)
    {
        JsonNode? root = JsonNode.Parse(config);
        return new JsonObject
        {
            ["rank"] = root?["r"]?.GetValue<int>(),
            ["alpha"] = root?["lora_alpha"]?.GetValue<double>(),
            ["target_modules"] = root?["target_modules"]?.DeepClone(),
            ["freeze_a"] = root?["federated_freeze_a"]?.DeepClone(),
        };
    }

    /// <summary>
    /// SHA-256 of the base model's weights file, as the round manifest defines it: model.safetensors, or for a sharded
    /// model the index file (which names every shard).
    /// </summary>
    private static string BaseModelSha256(string baseModel)
    {
        foreach (string name in new[] { "model.safetensors", "model.safetensors.index.json" })
        {
            string path = Path.Combine(baseModel, name);
            if (File.Exists(path))
            {
                using FileStream stream = File.OpenRead(path);
                return Convert.ToHexStringLower(SHA256.HashData(stream));
            }
        }
        throw new RunExportException($"the run's base model '{baseModel}' has no model.safetensors (or index) any more; its hash is part of the provenance");
    }

    /// <summary>Removes what a failed export wrote: the folder when the export created it, else only its files.</summary>
    internal static void DiscardPartial(string directory, bool created)
    {
        if (created)
        {
            Directory.Delete(directory, recursive: true);
            return;
        }
        foreach (string file in Directory.EnumerateFiles(directory))
        {
            File.Delete(file);
        }
    }

    private static string CoordinatorVersion() =>
        typeof(RunExporter).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    private static string Truncate(string text) => text.Length <= 80 ? text : text[..80] + "...";
}
