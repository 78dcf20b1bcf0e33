namespace Federated.Training.Lora;

/// <summary>LoRA hyper-parameters: which linear layers get an adapter, its rank and scale, and how A is initialised.</summary>
/// <param name="Rank">r, the inner dimension of B·A (1..4096).</param>
/// <param name="Alpha">lora_alpha; the update is scaled by alpha / r as in PEFT.</param>
/// <param name="Dropout">Dropout probability on the adapter input during training, in [0, 1).</param>
/// <param name="TargetModules">Projection names as PEFT's target_modules (q_proj .. down_proj; qkv_proj and gate_up_proj on Phi-3); a model skips names its family lacks.</param>
/// <param name="InitSeed">Seed for A's kaiming-uniform init; the coordinator hands it out so every client starts from the same A.</param>
/// <param name="FreezeA">FFA-LoRA (Sun et al. 2024): train only B so federated averaging is exact; the default for rounds.</param>
public sealed record LoraSettings(
    int Rank = 8,
    double Alpha = 16,
    double Dropout = 0.0,
    IReadOnlyList<string>? TargetModules = null,
    long InitSeed = 0,
    bool FreezeA = true)
{
    /// <summary>Every projection name a supported family has: Llama's seven, then Phi-3's fused qkv_proj and gate_up_proj.</summary>
    public static readonly IReadOnlyList<string> AllProjections =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj"];

    /// <summary>The target modules asked for (Llama's attention projections when none are given; a model picks its family's).</summary>
    public IReadOnlyList<string> Targets => TargetModules ?? ["q_proj", "k_proj", "v_proj", "o_proj"];

    /// <summary>alpha / r, as PEFT's LoraLayer.scaling without rsLoRA.</summary>
    public double Scaling => Alpha / Rank;

    /// <summary>Throws when a value is outside its allowed range.</summary>
    public void Validate()
    {
        if (Rank is < 1 or > 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(Rank), Rank, "LoRA rank must be in 1..4096");
        }
        if (!(Alpha > 0) || !double.IsFinite(Alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha, "lora_alpha must be a positive finite number");
        }
        if (!(Dropout >= 0 && Dropout < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, "lora_dropout must be in [0, 1)");
        }
        if (Targets.Count == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(TargetModules), "LoRA needs at least one target module");
        }
        foreach (string target in Targets)
        {
            if (!AllProjections.Contains(target))
            {
                throw new ArgumentOutOfRangeException(nameof(TargetModules), target,
                    $"LoRA target module '{target}' is not one of {string.Join(", ", AllProjections)}");
            }
        }
    }
}
