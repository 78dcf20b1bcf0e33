using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Data;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Grpc.Core;
using TorchSharp;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>Edge workers with records for DP-SGD, over mutual TLS to a <see cref="CoordinatorFixture"/>; each keeps its ledger in the fixture's folder.</summary>
internal sealed class RecordLevelClients(CoordinatorFixture coordinator, ITestOutputHelper output, string model, string tag)
{
    public List<RoundWorkResult> Results { get; } = [];

    public string LedgerPath(string name) => Path.Combine(coordinator.Root, $"{name}-{tag}-{LocalPrivacyLedger.FileName}");

    public string PolicyPath(string name) => Path.Combine(coordinator.Root, $"{name}-{tag}-{LocalPolicy.FileName}");

    /// <summary>Writes <paramref name="name"/>'s policy: generous client-level limits and the given record-level cap.</summary>
    public LocalPolicy WritePolicy(string name, double maxRecordEpsilon)
    {
        File.WriteAllText(PolicyPath(name), $$"""
            {
              "delta": 1e-5,
              "max_epsilon_per_run": 100,
              "max_epsilon_lifetime": 1000,
              "min_noise_multiplier": 0.1,
              "allowed_mechanisms": ["distributed_skellam"],
              "allowed_target_modules": ["q_proj", "v_proj"],
              "max_rank": 16,
              "max_rounds_per_day": 100,
              "max_record_epsilon": {{maxRecordEpsilon.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}}
            }
            """);
        return LocalPolicy.Load(PolicyPath(name));
    }

    /// <summary>The client's records: one tokenized example per line, not packed.</summary>
    public RecordLevelData Records(IReadOnlyList<string> lines, string name)
    {
        using HuggingFaceTokenizer tokenizer = HuggingFaceTokenizer.Load(model);
        JsonlDataset set = JsonlDataset.Parse(lines.Select(t => System.Text.Json.JsonSerializer.Serialize(new { text = t })), name, tokenizer, new DatasetOptions { MaxLength = 32 });
        return new RecordLevelData(set.Examples, tokenizer.PadId);
    }

    /// <summary>Runs one client's session until <paramref name="cancellationToken"/> ends it.</summary>
    public async Task RunAsync(string name, LocalPolicy policy, RecordLevelData records, CancellationToken cancellationToken)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        using LlamaForCausalLM local = LlamaForCausalLM.FromPretrained(model, torch.CPU);
        using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(LedgerPath(name));
        IReadOnlyList<TokenBatch> batches = TokenBatcher.Batches(records.Examples, 2, records.PadId, shuffleSeed: 1);
        var worker = new EdgeRoundWorker(connection, name, local, batches, new LocalPolicyGate(policy, ledger, TimeProvider.System))
        {
            Report = change => output.WriteLine($"{name}: {change.Text}"),
            Records = records,
        };
        await WorkerSession.RunAsync(connection, worker, Results, cancellationToken);
    }

}
