using Federated.Coordinator.State;
using Federated.Protos.V1;
using Federated.Wire;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// What makes a run plan acceptable, checked once when a run starts: every refusal names the field, the value and the
/// allowed range. Also the sizes that follow from a valid plan (clients per round, the SecAgg+ threshold).
/// </summary>
internal static class RunPlanValidation
{
    /// <summary>Most clients in one round; with Poisson sampling also the cap that sizes every round's scale.</summary>
    public const int MaxClientsPerRound = 1000;

    public const uint MaxRounds = 10_000;
    public const int MaxRank = 256;

    /// <summary>Refuses a plan with any field outside its range.</summary>
    /// <exception cref="InvalidPlanException">A field is invalid; the message names it, its value and the allowed range.</exception>
    public static void Validate(RunPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        static InvalidPlanException Invalid(string message) => new(message);
        if (string.IsNullOrEmpty(plan.BaseModel) || !Directory.Exists(plan.BaseModel))
        {
            throw Invalid($"base_model '{plan.BaseModel}' is not a folder on the coordinator host");
        }
        if (plan.LoraRank is 0 or > MaxRank)
        {
            throw Invalid($"lora_rank {plan.LoraRank} is invalid: use 1..{MaxRank}");
        }
        if (plan.Rounds is 0 or > MaxRounds)
        {
            throw Invalid($"rounds {plan.Rounds} is invalid: use 1..{MaxRounds}");
        }
        if ((plan.SamplingRate != 0) == (plan.ClientsPerRound != 0))
        {
            throw Invalid($"set exactly one of clients_per_round ({plan.ClientsPerRound}) and sampling_rate ({plan.SamplingRate})");
        }
        if (plan.SamplingRate != 0 && !(plan.SamplingRate > 0 && plan.SamplingRate <= 1))
        {
            throw Invalid($"sampling_rate {plan.SamplingRate} is invalid: use a rate in (0, 1]");
        }
        if (plan.SamplingRate == 0 && plan.ClientsPerRound is < 2 or > MaxClientsPerRound)
        {
            throw Invalid($"clients_per_round {plan.ClientsPerRound} is invalid: use 2..{MaxClientsPerRound}");
        }
        if (plan.StageTimeoutSeconds is > 0 and < 10 or > 86_400)
        {
            throw Invalid($"stage_timeout_seconds {plan.StageTimeoutSeconds} is invalid: use 10..86400, or 0 for the coordinator's default");
        }
        if (plan.LocalSteps is 0 or > 100_000)
        {
            throw Invalid($"local_steps {plan.LocalSteps} is invalid: use 1..100000");
        }
        if (!(plan.LearningRate > 0) || !double.IsFinite(plan.LearningRate))
        {
            throw Invalid($"learning_rate {plan.LearningRate} is invalid: it must be a finite number > 0");
        }
        if (!(plan.ClipNorm > 0) || !double.IsFinite(plan.ClipNorm))
        {
            throw Invalid($"clip_norm {plan.ClipNorm} is invalid: it must be a finite number > 0");
        }
        if (plan.Mechanism is not (NoiseMechanism.DistributedSkellam or NoiseMechanism.CentralGaussian))
        {
            throw Invalid($"mechanism {plan.Mechanism} is not supported by this coordinator: use NOISE_MECHANISM_DISTRIBUTED_SKELLAM or NOISE_MECHANISM_CENTRAL_GAUSSIAN");
        }
        // Before the noise fields: which of them apply depends on the unit.
        ValidatePrivacyUnit(plan);
        if (!double.IsFinite(plan.TargetEpsilon) || plan.TargetEpsilon < 0)
        {
            throw Invalid($"target_epsilon {plan.TargetEpsilon} is invalid: it must be a finite number >= 0 (0 = not set)");
        }
        if (!PrivacyUnitWire.HasClientLevel(plan.PrivacyUnit))
        {
            if (plan.NoiseMultiplier != 0 || plan.TargetEpsilon != 0)
            {
                throw Invalid($"noise_multiplier {plan.NoiseMultiplier} and target_epsilon {plan.TargetEpsilon} set client-level noise, which privacy_unit record has none of: leave both 0, or use privacy_unit both");
            }
        }
        else if (plan.NoiseMultiplier < 0 || !double.IsFinite(plan.NoiseMultiplier) || (plan.NoiseMultiplier == 0 && !(plan.TargetEpsilon > 0)))
        {
            throw Invalid($"noise_multiplier {plan.NoiseMultiplier} is invalid: give a finite value > 0, or 0 with target_epsilon > 0");
        }
        if (!(plan.Delta > 0) || plan.Delta >= 1)
        {
            throw Invalid($"delta {plan.Delta} is invalid: it must be in (0, 1)");
        }
        if (plan.Population.Length > 64 || !plan.Population.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
        {
            throw Invalid($"population '{plan.Population}' is invalid: use 1-64 characters of A-Z a-z 0-9 . _ -");
        }
    }

    /// <summary>Most records one DP-SGD step may expect.</summary>
    public const uint MaxRecordExpectedBatch = 100_000;

    // record and both: every edge runs DP-SGD with the plan's z and C; the record fields are refused under client, so a
    // plan never looks record-level without being so.
    private static void ValidatePrivacyUnit(RunPlan plan)
    {
        if (plan.PrivacyUnit is not (PrivacyUnit.Unspecified or PrivacyUnit.Client or PrivacyUnit.Record or PrivacyUnit.Both))
        {
            throw new InvalidPlanException($"privacy_unit {plan.PrivacyUnit} is invalid: use client, record or both");
        }
        if (!PrivacyUnitWire.HasRecordLevel(plan.PrivacyUnit))
        {
            if (plan.RecordNoiseMultiplier != 0 || plan.RecordMaxGradNorm != 0 || plan.RecordExpectedBatch != 0)
            {
                throw new InvalidPlanException("record_noise_multiplier, record_max_grad_norm and record_expected_batch apply only with privacy_unit record or both");
            }
            return;
        }
        string unit = PrivacyUnitWire.Name(plan.PrivacyUnit);
        if (!(plan.RecordNoiseMultiplier > 0) || !double.IsFinite(plan.RecordNoiseMultiplier)
            || plan.RecordNoiseMultiplier > Aggregation.Privacy.PrivacyPlanParameters.MaxNoiseMultiplier)
        {
            throw new InvalidPlanException(
                $"record_noise_multiplier {plan.RecordNoiseMultiplier} is invalid with privacy_unit {unit}: use a finite number in (0, {Aggregation.Privacy.PrivacyPlanParameters.MaxNoiseMultiplier}]");
        }
        if (!(plan.RecordMaxGradNorm > 0) || !double.IsFinite(plan.RecordMaxGradNorm))
        {
            throw new InvalidPlanException($"record_max_grad_norm {plan.RecordMaxGradNorm} is invalid with privacy_unit {unit}: use a finite number > 0");
        }
        if (plan.RecordExpectedBatch is 0 or > MaxRecordExpectedBatch)
        {
            throw new InvalidPlanException($"record_expected_batch {plan.RecordExpectedBatch} is invalid with privacy_unit {unit}: use 1..{MaxRecordExpectedBatch}");
        }
    }

    /// <summary>The population the plan draws on (the default one when it names none).</summary>
    public static string Population(RunPlan plan) => plan.Population.Length == 0 ? CoordinatorState.DefaultPopulation : plan.Population;

    /// <summary>The most clients a round of the plan can have: clients_per_round, or the cap when clients are Poisson-sampled.</summary>
    public static int MaxClients(RunPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return plan.SamplingRate > 0 ? MaxClientsPerRound : (int)plan.ClientsPerRound;
    }

    /// <summary>
    /// The smallest threshold for <paramref name="clients"/> participants: above half of them (and at least 2), so two
    /// survivor sets a coordinator could tell different clients always share a member (Bonawitz et al. 2017, section 4).
    /// </summary>
    public static int MinThreshold(int clients) => Math.Max(2, clients / 2 + 1);

    /// <summary>The threshold a fixed count of <paramref name="clients"/> gets when min_survivors is not set: about two thirds, at least 2.</summary>
    public static int DefaultThreshold(int clients) => Math.Max(2, (clients * 2 + 2) / 3);

    /// <summary>The SecAgg+ threshold t: min_survivors (required with Poisson sampling), or about two thirds of the clients per round.</summary>
    /// <exception cref="InvalidPlanException">min_survivors is outside its range.</exception>
    public static int Threshold(RunPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (plan.SamplingRate > 0)
        {
            return plan.MinSurvivors is >= 2 and <= MaxClientsPerRound
                ? (int)plan.MinSurvivors
                : throw new InvalidPlanException($"min_survivors {plan.MinSurvivors} is invalid with sampling_rate: use 2..{MaxClientsPerRound}");
        }
        int n = (int)plan.ClientsPerRound;
        int threshold = plan.MinSurvivors == 0 ? DefaultThreshold(n) : (int)plan.MinSurvivors;
        if (threshold < MinThreshold(n) || threshold > n)
        {
            throw new InvalidPlanException(
                $"min_survivors {threshold} is invalid: use {MinThreshold(n)}..clients_per_round ({n}); the threshold must be above half the participants (t > k/2), which every client checks");
        }
        return threshold;
    }
}
