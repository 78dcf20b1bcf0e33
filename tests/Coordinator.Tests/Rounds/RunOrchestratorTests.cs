using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.Coordinator.Tests.State;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Microsoft.Extensions.Logging.Abstractions;

namespace Federated.Coordinator.Tests.Rounds;

/// <summary>StartRun against a real state store: what it records, in which transaction, and what a refusal leaves behind.</summary>
public sealed class RunOrchestratorTests : IAsyncDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly X509Certificate2 _server = TestSigner.Create();
    private readonly X509Certificate2 _ca;
    private readonly AdapterSigner _adapterSigner;
    private readonly CoordinatorSigner _manifestSigner;
    private readonly string _pki;
    private TestStateDatabase? _database;
    private CoordinatorState _state = null!;
    private AdapterStore _adapters = null!;
    private RoundRegistry _rounds = null!;
    private RunOrchestrator _orchestrator = null!;
    private readonly string _model;

    public RunOrchestratorTests()
    {
        string pki = _dir.File("pki");
        (_ca, _adapterSigner) = TestAdapterSigner.Create(pki);
        _manifestSigner = new CoordinatorSigner(_server);
        _pki = pki;
        // config.json only: planning a run never loads the base model's weights.
        _model = _dir.File("model");
        Directory.CreateDirectory(_model);
        File.WriteAllText(Path.Combine(_model, "config.json"), TinyLlamaFactory.DefaultConfig().ToJson());
    }

    private void Use(StateBackend backend)
    {
        _database = new TestStateDatabase(backend);
        _state = _database.Open(_server);
        _adapters = TestStateDatabase.Adapters(_state, _adapterSigner);
        _rounds = new RoundRegistry(_manifestSigner, TimeProvider.System);
        _orchestrator = new RunOrchestrator(_state, _rounds, _adapters, new CoordinatorOptions { Pki = _pki }, TimeProvider.System, NullLogger<RunOrchestrator>.Instance);
    }

    public async ValueTask DisposeAsync()
    {
        if (_orchestrator is not null)
        {
            await _orchestrator.DisposeAsync();
        }
        _rounds?.Dispose();
        _state?.Dispose();
        _database?.Dispose();
        _manifestSigner.Dispose();
        _adapterSigner.Dispose();
        _ca.Dispose();
        _server.Dispose();
        _dir.Dispose();
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Start_Affordable_InitialAdapterAndRunRecordedTogetherAndPricedByRunPricing(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        RunPlan plan = Plan();

        AcceptedRun run = _orchestrator.Start(plan, "engineer");

        string[] actions = [.. _state.Audit.Read(1, 100).Entries.Select(e => JsonDocument.Parse(e.CanonicalJson).RootElement.GetProperty("action").GetString()!)];
        Assert.Equal(["budget.set", "adapter.store", "run.start"], actions);
        RunRecord record = _state.Runs.Get(run.RunId)!;
        Assert.Equal((RunState.Pending, run.PlannedEpsilon), (record.State, record.PlannedEpsilon));
        Assert.NotNull(_adapters.Read(record.AdapterSha256));
        int dimension = LoraShapes.BDimension(TinyLlamaFactory.DefaultConfig(), new LoraSettings(Rank: 2, TargetModules: ["q_proj", "v_proj"]));
        RunPrice price = RunPricing.Price(plan, dimension);
        Assert.Equal((price.NoiseMultiplier, price.PlannedEpsilon), (run.NoiseMultiplier, run.PlannedEpsilon));
        Assert.Equal(price.Privacy.Parameters, run.Privacy.Parameters);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Start_BudgetTooSmall_RefusedNamingTheNumbersAndNothingWritten(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 0.01, 1e-5, "officer");

        var ex = Assert.Throws<BudgetRefusedException>(() => _orchestrator.Start(Plan(), "engineer"));

        Assert.StartsWith("the plan needs epsilon ", ex.Message, StringComparison.Ordinal);
        Assert.Contains("has 0.01 left of its budget 0.01 at delta 1E-05 (spent 0, reserved 0)", ex.Message, StringComparison.Ordinal);
        Assert.Empty(_state.Runs.ListUnfinished());
        Assert.Empty(_database!.StoredAdapterNames());
        Assert.Single(_state.Audit.Read(1, 100).Entries);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Start_BaseModelWithoutConfig_InvalidPlanNamingTheModel(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        string empty = _dir.File("empty-model");
        Directory.CreateDirectory(empty);
        RunPlan plan = Plan();
        plan.BaseModel = empty;

        var ex = Assert.Throws<InvalidPlanException>(() => _orchestrator.Start(plan, "engineer"));

        Assert.StartsWith($"base model '{empty}' cannot be used: ", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Price_TargetEpsilon_SmallestNoiseThatMeetsIt()
    {
        RunPlan plan = Plan();
        plan.NoiseMultiplier = 0;
        plan.TargetEpsilon = 8;

        RunPrice price = RunPricing.Price(plan, 1024);
        plan.NoiseMultiplier = price.NoiseMultiplier * (1 - 2e-4);
        double justBelow = RunPricing.Price(plan, 1024).PlannedEpsilon;

        Assert.InRange(price.PlannedEpsilon, 0, 8);
        Assert.True(justBelow > 8, $"noise {plan.NoiseMultiplier} still meets the target ({justBelow})");
        plan.NoiseMultiplier = 0;
        plan.TargetEpsilon = 1e-6;
        Assert.StartsWith("target_epsilon 1E-06 is invalid: ", Assert.Throws<InvalidPlanException>(() => RunPricing.Price(plan, 1024)).Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public async Task Start_ManyInParallelAgainstOneBudget_ComposedReservationsNeverExceedItAndEveryRunThatFitsIsAccepted(StateBackend backend)
    {
        Use(backend);
        // Each plan alone is far inside the budget; three fit composed per order at the budget's delta, four do not.
        RunPlan plan = Plan();
        int dimension = LoraShapes.BDimension(TinyLlamaFactory.DefaultConfig(), new LoraSettings(Rank: 2, TargetModules: ["q_proj", "v_proj"]));
        PrivacyPlan priced = RunPricing.Price(plan, dimension).Privacy;
        double[] Runs(int k) => [.. priced.RdpAfter(plan.Rounds).Select(r => r * k)];
        double Composed(int k) => RdpAnalysis.Epsilon(priced.Orders, Runs(k), 1e-5).Epsilon;
        double budget = (Composed(3) + Composed(4)) / 2;
        _state.Budgets.Set("default", budget, 1e-5, "officer");
        _orchestrator.SelectionTimeout = TimeSpan.FromHours(1);

        using var gate = new Barrier(8);
        Task<AcceptedRun?>[] starts = [.. Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            gate.SignalAndWait();
            try
            {
                return _orchestrator.Start(Plan(), "engineer");
            }
            catch (BudgetRefusedException)
            {
                return null;
            }
        }))];
        AcceptedRun?[] results = await Task.WhenAll(starts);

        AcceptedRun[] accepted = [.. results.OfType<AcceptedRun>()];
        Assert.Equal(3, accepted.Length);
        BudgetRecord after = _state.Budgets.Get("default")!;
        Assert.True(after.EpsilonSpent + after.EpsilonReserved <= budget, $"{after.EpsilonReserved} reserved of {budget}");
        Assert.Equal(Composed(3), after.EpsilonReserved, 9);
        Assert.Equal(3, _state.Runs.ListUnfinished().Count);
        // Refused starts left nothing behind: one initial adapter per accepted run.
        Assert.Equal(3, _database!.StoredAdapterNames().Count);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public async Task Abort_RunHoldingAReservation_ReleasesIt(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        _orchestrator.SelectionTimeout = TimeSpan.FromHours(1);
        AcceptedRun run = _orchestrator.Start(Plan(), "engineer");
        Assert.True(_state.Budgets.Get("default")!.EpsilonReserved > 0);

        await _orchestrator.AbortAsync(run.RunId, "test", "engineer");

        BudgetRecord budget = _state.Budgets.Get("default")!;
        Assert.Equal((0.0, 0.0, 1000.0), (budget.EpsilonSpent, budget.EpsilonReserved, budget.EpsilonRemaining));
    }

    [Fact]
    public void Price_PoissonCentralPublicSample_PricedWithoutAmplification()
    {
        // The review's plan: central, q = 0.05, 50 rounds, z = 1, delta 1e-5. Priced as the subsampled Gaussian it was 3.18;
        // the roster is public, so no amplification: 166.04 at replace-one (57.30 at zero-out; PrivacyPlanTests has both).
        RunPlan plan = Plan();
        plan.Mechanism = NoiseMechanism.CentralGaussian;
        plan.ClientsPerRound = 0;
        plan.SamplingRate = 0.05;
        plan.MinSurvivors = 2;
        plan.Rounds = 50;
        plan.Delta = 1e-5;

        RunPrice price = RunPricing.Price(plan, 4096);

        Assert.False(price.Privacy.Amplified);
        Assert.Equal(1.0, price.Privacy.PricedSamplingRate);
        Assert.Equal(166.03553359954904, price.PlannedEpsilon, 1e-9);
    }

    [Theory]
    [InlineData(PrivacyUnit.Both, 0.0, 1.0, 4u, "record_noise_multiplier 0 is invalid with privacy_unit both")]
    [InlineData(PrivacyUnit.Both, double.NaN, 1.0, 4u, "record_noise_multiplier NaN is invalid with privacy_unit both")]
    [InlineData(PrivacyUnit.Record, double.PositiveInfinity, 1.0, 4u, "is invalid with privacy_unit record: use a finite number in (0, 10000]")]
    [InlineData(PrivacyUnit.Both, 1.0, 0.0, 4u, "record_max_grad_norm 0 is invalid")]
    [InlineData(PrivacyUnit.Both, 1.0, double.PositiveInfinity, 4u, "is invalid with privacy_unit both: use a finite number > 0")]
    [InlineData(PrivacyUnit.Both, 1.0, 1.0, 0u, "record_expected_batch 0 is invalid")]
    [InlineData(PrivacyUnit.Client, 1.0, 1.0, 4u, "apply only with privacy_unit record or both")]
    [InlineData((PrivacyUnit)9, 0.0, 0.0, 0u, "privacy_unit 9 is invalid")]
    public void Start_BadRecordLevelPlan_InvalidPlanNamingTheFieldAndNothingRecorded(PrivacyUnit unit, double z, double c, uint batch, string expected)
    {
        // Validation and file checks, whatever holds the state: SQLite is enough.
        Use(StateBackend.Sqlite);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        RunPlan plan = Plan();
        plan.PrivacyUnit = unit;
        plan.RecordNoiseMultiplier = z;
        plan.RecordMaxGradNorm = c;
        plan.RecordExpectedBatch = batch;
        if (unit == PrivacyUnit.Record)
        {
            plan.NoiseMultiplier = 0;
        }

        var ex = Assert.Throws<InvalidPlanException>(() => _orchestrator.Start(plan, "engineer"));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        Assert.Empty(_state.Runs.ListUnfinished());
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Start_RecordOnlyWithClientNoise_InvalidPlan(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");
        RunPlan plan = RecordPlan(PrivacyUnit.Record);
        plan.NoiseMultiplier = 1;

        var ex = Assert.Throws<InvalidPlanException>(() => _orchestrator.Start(plan, "engineer"));

        Assert.Contains("privacy_unit record has none of", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Start_RecordOnly_ReservesNothingAndStatusShowsTheUnitAndItsParameters(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");

        AcceptedRun run = _orchestrator.Start(RecordPlan(PrivacyUnit.Record), "engineer");
        RunStatus status = _orchestrator.Status(run.RunId)!;

        Assert.Equal(0, run.PlannedEpsilon);
        Assert.Equal(0, _state.Budgets.Get("default")!.EpsilonReserved);
        Assert.Equal(PrivacyMechanism.CentralGaussian, run.Privacy.Parameters.Mechanism);
        Assert.Equal((PrivacyUnit.Record, 1.2, 0.5, 3u), (status.RunPrivacyUnit, status.RecordNoiseMultiplier, status.RecordMaxGradNorm, status.RecordExpectedBatch));
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Start_Both_PricesTheClientLevelPlanAsUnderClientAndKeepsTheRecordParameters(StateBackend backend)
    {
        Use(backend);
        _state.Budgets.Set("default", 1000, 1e-5, "officer");

        AcceptedRun both = _orchestrator.Start(RecordPlan(PrivacyUnit.Both), "engineer");
        RunPrice client = RunPricing.Price(Plan(), both.Privacy.Parameters.Dimension);

        Assert.Equal(client.PlannedEpsilon, both.PlannedEpsilon, 12);
        Assert.True(_state.Budgets.Get("default")!.EpsilonReserved > 0);
        Assert.Equal(PrivacyUnit.Both, _orchestrator.Status(both.RunId)!.RunPrivacyUnit);
    }

    private RunPlan RecordPlan(PrivacyUnit unit)
    {
        RunPlan plan = Plan();
        plan.PrivacyUnit = unit;
        plan.RecordNoiseMultiplier = 1.2;
        plan.RecordMaxGradNorm = 0.5;
        plan.RecordExpectedBatch = 3;
        if (unit == PrivacyUnit.Record)
        {
            plan.NoiseMultiplier = 0;
        }
        return plan;
    }

    private RunPlan Plan()
    {
        var plan = new RunPlan
        {
            BaseModel = _model, LoraRank = 2, Rounds = 3, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 1, Delta = 1e-6,
        };
        plan.TargetModules.Add("q_proj");
        plan.TargetModules.Add("v_proj");
        return plan;
    }
}
