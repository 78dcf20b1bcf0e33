using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.Coordinator.Tests.State;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Peft;
using Federated.Training.Provenance;
using Google.Protobuf;
using TorchSharp;

namespace Federated.Coordinator.Tests;

/// <summary>Exports a run recorded in a real state store (one released round) and checks the folder as a verifier would.</summary>
public sealed class RunExporterTests : IDisposable
{
    private const string RunId = "run-00112233aabbccdd";

    private readonly TempDirectory _dir = new();
    private readonly X509Certificate2 _ca;
    private readonly X509Certificate2 _signer;
    private readonly X509Certificate2 _server = TestSigner.Create();
    private TestStateDatabase? _database;
    private CoordinatorState _state = null!;
    private readonly AdapterSigner _storeSigner;
    private AdapterStore _store = null!;
    private readonly GlobalAdapter _adapter;
    private readonly string _baseModel;

    public RunExporterTests()
    {
        string pki = _dir.File("pki");
        (_ca, _storeSigner) = TestAdapterSigner.Create(pki);
        _signer = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(pki, FederationPki.AdapterSignerName + ".pfx"), password: null);
        _baseModel = _dir.File("base");
        TinyLlamaFactory.Write(_baseModel, TinyLlamaFactory.DefaultConfig(), seed: 9);
        _adapter = GlobalAdapter.Create(_baseModel, new LoraSettings(Rank: 2, Alpha: 4, TargetModules: ["q_proj", "v_proj"], InitSeed: 42, FreezeA: true));
    }

    private void Use(StateBackend backend)
    {
        _database = new TestStateDatabase(backend);
        _state = _database.Open(_server);
        _store = TestStateDatabase.Adapters(_state, _storeSigner);
    }

    public void Dispose()
    {
        _state?.Dispose();
        _database?.Dispose();
        _storeSigner.Dispose();
        _server.Dispose();
        _signer.Dispose();
        _ca.Dispose();
        _dir.Dispose();
    }

    /// <summary>Records a run whose round 1 released <paramref name="step"/> added to every B value (3 participants).</summary>
    private string RecordRunWithOneRelease(float step)
    {
        var plan = new RunPlan
        {
            BaseModel = _baseModel, LoraRank = 2, Rounds = 3, ClientsPerRound = 3, LocalSteps = 5, LearningRate = 0.01,
            ClipNorm = 1.5, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.9, Delta = 1e-6,
        };
        plan.TargetModules.Add("q_proj");
        plan.TargetModules.Add("v_proj");
        string initial = _store.Put(_adapter.Serialize(), RunId, 0);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        _state.Runs.Create(RunId, plan.ToByteArray(), "default", 2.5, 0.9, initial, "engineer");
        _state.Rounds.Start(RunId, 1, new Dictionary<string, int> { ["alice"] = 1, ["bob"] = 2, ["carol"] = 3 }, initial);
        _adapter.ApplyMeanUpdate(Enumerable.Repeat(step, _adapter.BDimension).ToArray());
        StoredAdapter released = _store.Write(_adapter.Serialize());
        _state.Rounds.Complete(new RoundCompletion(
            new LedgerRecord(0, RunId, 1, "default", 0.75, 0.75, 1e-6, (int)NoiseMechanism.DistributedSkellam, 0.9, 1.5, 3, DateTimeOffset.UtcNow) { Rdp = TestCharges.Rdp() }, released,
            new Dictionary<string, ParticipantStatus> { ["alice"] = ParticipantStatus.Uploaded, ["bob"] = ParticipantStatus.Uploaded, ["carol"] = ParticipantStatus.Uploaded }));
        return released.Sha256;
    }

    private RunExporter Exporter(X509Certificate2? signer = null) => new(_state, _store, signer ?? _signer, TimeProvider.System);

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Export_ReleasedRun_WritesSignedPeftFolderThatVerifiesAndLoadsBack(StateBackend backend)
    {
        Use(backend);
        string released = RecordRunWithOneRelease(0.25f);
        string output = _dir.File("export");

        RunExportSummary summary = Exporter().Export(RunId, output);

        Assert.Equal(["adapter.p7s", "adapter_config.json", "adapter_model.safetensors", "provenance.json"], summary.Files);
        Assert.Equal(released, summary.AdapterSha256);
        Assert.Equal(1, summary.RoundsReleased);
        using (X509Certificate2 signer = AdapterSignature.Verify(output, _ca))
        {
            Assert.Equal(_signer.Thumbprint, signer.Thumbprint);
        }
        // The weights are the released blob byte for byte.
        Assert.Equal(released, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(output, PeftAdapter.WeightsFileName)))));

        (LoraSettings settings, AdapterTensors loaded, _) = PeftAdapter.Load(output);
        Assert.Equal(2, settings.Rank);
        Assert.Equal(42, settings.InitSeed);
        Assert.Equal(["q_proj", "v_proj"], settings.Targets);
        Assert.Equal(_adapter.FlatB(), loaded.OnlyB().Flatten());
        Assert.All(loaded.OnlyB().Flatten(), b => Assert.Equal(0.25f, b));
        using (LlamaForCausalLM model = LlamaForCausalLM.FromPretrained(_baseModel, torch.CPU))
        {
            PeftAdapter.Apply(output, model);
            Assert.Equal(loaded.ElementCount, model.GetAdapter().ElementCount);
        }

        using JsonDocument provenance = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, RunExporter.ProvenanceFileName)));
        JsonElement root = provenance.RootElement;
        Assert.Equal(RunId, root.GetProperty("run_id").GetString());
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(_baseModel, "model.safetensors")))),
            root.GetProperty("base_model_sha256").GetString());
        Assert.Equal(2, root.GetProperty("lora").GetProperty("rank").GetInt32());
        Assert.Equal(4.0, root.GetProperty("lora").GetProperty("alpha").GetDouble());
        Assert.Equal(["q_proj", "v_proj"], root.GetProperty("lora").GetProperty("target_modules").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal("distributed_skellam", root.GetProperty("mechanism").GetString());
        Assert.Equal(0.75, root.GetProperty("epsilon_spent").GetDouble());
        Assert.Equal(1e-6, root.GetProperty("delta").GetDouble());
        Assert.Equal(("client", "replace-one"), (root.GetProperty("privacy_unit").GetString(), root.GetProperty("adjacency").GetString()));
        Assert.Equal(1.5, root.GetProperty("clip_norm").GetDouble());
        Assert.Equal(0.9, root.GetProperty("noise_multiplier").GetDouble());
        Assert.Equal(3, root.GetProperty("rounds_planned").GetInt32());
        Assert.Equal(1, root.GetProperty("rounds_released").GetInt32());
        JsonElement round = Assert.Single(root.GetProperty("participants_per_round").EnumerateArray());
        Assert.Equal(1, round.GetProperty("round").GetInt32());
        Assert.Equal(3, round.GetProperty("participants").GetInt32());
        Assert.False(string.IsNullOrEmpty(root.GetProperty("coordinator_version").GetString()));
        Assert.True(root.GetProperty("exported_at").GetDateTimeOffset() > DateTimeOffset.UtcNow.AddMinutes(-5));
    }

    [Theory]
    [InlineData("adapter_model.safetensors")]
    [InlineData("provenance.json")]
    [InlineData("adapter_config.json")]
    public void Export_OneByteChangedAfterwards_VerificationRefuses(string file)
    {
        // Validation and file checks, whatever holds the state: SQLite is enough.
        Use(StateBackend.Sqlite);
        RecordRunWithOneRelease(0.5f);
        string output = _dir.File("export");
        Exporter().Export(RunId, output);
        string path = Path.Combine(output, file);
        byte[] bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x01;
        File.WriteAllBytes(path, bytes);

        var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(output, _ca));
        Assert.Contains($"file {file} changed after signing", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Export_NonEmptyOutput_RefusedAndLeftAlone(StateBackend backend)
    {
        Use(backend);
        RecordRunWithOneRelease(0.1f);
        string output = _dir.File("busy");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "notes.txt"), "mine");

        var ex = Assert.Throws<IOException>(() => Exporter().Export(RunId, output));
        Assert.Contains("not empty", ex.Message, StringComparison.Ordinal);
        Assert.Equal(["notes.txt"], Directory.EnumerateFiles(output).Select(Path.GetFileName));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Export_RunWithNothingReleased_RefusedAndNothingWritten(StateBackend backend)
    {
        Use(backend);
        var plan = new RunPlan
        {
            BaseModel = _baseModel, LoraRank = 2, Rounds = 3, ClientsPerRound = 3, LocalSteps = 5, LearningRate = 0.01,
            ClipNorm = 1.5, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0.9, Delta = 1e-6,
        };
        plan.TargetModules.Add("q_proj");
        string initial = _store.Put(_adapter.Serialize(), RunId, 0);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        _state.Runs.Create(RunId, plan.ToByteArray(), "default", 2.5, 0.9, initial, "engineer");

        var ex = Assert.Throws<RunExportException>(() => Exporter().Export(RunId, _dir.File("out")));

        Assert.False(ex.NotFound);
        Assert.Contains("has released no round", ex.Message, StringComparison.Ordinal);
        Assert.Contains("0 of 3 rounds", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_dir.File("out")));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Export_UnknownRun_NotFound(StateBackend backend)
    {
        Use(backend);
        var ex = Assert.Throws<RunExportException>(() => Exporter().Export("run-ffffffffffffffff", _dir.File("none")));
        Assert.True(ex.NotFound);
        Assert.False(Directory.Exists(_dir.File("none")));
    }

    [Theory]
    [InlineData("")]
    [InlineData("../etc")]
    [InlineData("run id")]
    public void Export_MalformedRunId_Refused(string runId)
    {
        // Validation and file checks, whatever holds the state: SQLite is enough.
        Use(StateBackend.Sqlite);
        Assert.Throws<ArgumentException>(() => Exporter().Export(runId, _dir.File("none")));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Export_WithoutSigningIdentity_RefusedNamingTheFix(StateBackend backend)
    {
        Use(backend);
        RecordRunWithOneRelease(0.1f);
        var ex = Assert.Throws<RunExportException>(() => new RunExporter(_state, _store, signer: null, TimeProvider.System).Export(RunId, _dir.File("out")));
        Assert.False(ex.NotFound);
        Assert.Contains(FederationPki.AdapterSignerName, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Export_DamagedStoredAdapter_RefusedAndNothingLeft(StateBackend backend)
    {
        Use(backend);
        string released = RecordRunWithOneRelease(0.1f);
        string stored = released + ".adapter";
        byte[] bytes = _database!.ReadStoredAdapter(stored);
        bytes[^1] ^= 0x80;
        _database.WriteStoredAdapter(stored, bytes);

        var ex = Assert.Throws<RunExportException>(() => Exporter().Export(RunId, _dir.File("out")));
        Assert.Contains("damaged", ex.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(_dir.File("out")));
    }
}
