using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Lora;

/// <summary>A linear layer y = x Wᵀ + b with an optional LoRA branch (scaling · B A x), named like Hugging Face and PEFT.</summary>
internal sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;
    private readonly Parameter? _bias;
    private Parameter? _loraA;
    private Parameter? _loraB;
    private double _scaling;
    private double _dropout;

    public LoraLinear(string name, long inFeatures, long outFeatures, bool hasBias, Device device)
        : base(name)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        // Empty: weights are always loaded or initialised explicitly, so no time goes into a throw-away init.
        _weight = new Parameter(torch.empty([outFeatures, inFeatures], ScalarType.Float32, device), requires_grad: false);
        register_parameter("weight", _weight);
        if (hasBias)
        {
            _bias = new Parameter(torch.zeros([outFeatures], ScalarType.Float32, device), requires_grad: false);
            register_parameter("bias", _bias);
        }
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    public Parameter Weight => _weight;

    public Parameter? Bias => _bias;

    public Parameter? LoraA => _loraA;

    public Parameter? LoraB => _loraB;

    public bool HasLora => _loraA is not null;

    public double Scaling => _scaling;

    /// <summary>When false the LoRA branch is skipped (evaluation of the base model with an adapter attached).</summary>
    public bool LoraEnabled { get; set; } = true;

    public override Tensor forward(Tensor input)
    {
        Tensor output = nn.functional.linear(input, _weight, _bias);
        if (_loraA is null || _loraB is null || !LoraEnabled)
        {
            return output;
        }
        Tensor x = _dropout > 0 && training ? nn.functional.dropout(input, _dropout, true) : input;
        using Tensor down = nn.functional.linear(x, _loraA);
        using Tensor up = nn.functional.linear(down, _loraB);
        return output.add_(up, _scaling);
    }

    /// <summary>Adds A [r, in] (kaiming-uniform from a per-module seed, as PEFT) and B [out, r] = 0.</summary>
    public void AttachLora(LoraSettings settings, string modulePath)
    {
        if (_loraA is not null)
        {
            throw new InvalidOperationException($"module '{modulePath}' already has a LoRA adapter");
        }
        Device device = _weight.device;
        using (torch.no_grad())
        {
            Tensor a = LoraInit.KaimingUniformA(settings.Rank, InFeatures, settings.InitSeed, modulePath).to(device);
            _loraA = new Parameter(a, requires_grad: !settings.FreezeA);
            _loraB = new Parameter(torch.zeros([OutFeatures, settings.Rank], ScalarType.Float32, device), requires_grad: true);
        }
        register_parameter("lora_A", _loraA);
        register_parameter("lora_B", _loraB);
        _scaling = settings.Scaling;
        _dropout = settings.Dropout;
    }

    /// <summary>W ← W + scaling · B A, then drops the adapter so the layer is a plain linear again.</summary>
    public void MergeAndRemoveLora()
    {
        if (_loraA is null || _loraB is null)
        {
            return;
        }
        using (torch.no_grad())
        {
            using Tensor delta = _loraB.matmul(_loraA);
            _weight.add_(delta, _scaling);
        }
        RemoveLora();
    }

    public void RemoveLora()
    {
        if (_loraA is null)
        {
            return;
        }
        // TorchSharp keeps registered parameters by name; re-registering replaces, so drop them from the dictionary.
        _internal_params.Remove("lora_A");
        _internal_params.Remove("lora_B");
        _loraA.Dispose();
        _loraB!.Dispose();
        _loraA = null;
        _loraB = null;
    }
}

/// <summary>Deterministic LoRA A initialisation shared by all clients of a round (and by the coordinator, which builds the initial adapter from config.json).</summary>
public static class LoraInit
{
    /// <summary>
    /// PEFT's reset_lora_parameters uses nn.init.kaiming_uniform_(A, a=sqrt(5)): gain sqrt(2/(1+5)), bound
    /// gain·sqrt(3/fan_in) = 1/sqrt(fan_in). Drawn on the CPU from a generator seeded by (seed, module path), so the
    /// values do not depend on the device, the order modules are visited, or which other modules have adapters.
    /// </summary>
    public static Tensor KaimingUniformA(int rank, long inFeatures, long seed, string modulePath)
    {
        var gen = new Generator(ModuleSeed(seed, modulePath));
        try
        {
            double bound = 1.0 / Math.Sqrt(inFeatures);
            using Tensor u = torch.rand([rank, inFeatures], ScalarType.Float32, torch.CPU, generator: gen);
            return u.mul(2 * bound).sub_(bound);
        }
        finally
        {
            gen.Dispose();
        }
    }

    internal static ulong ModuleSeed(long seed, string modulePath)
    {
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes($"federated-lora-A/{seed}/{modulePath}"));
        // Positive 63-bit value: torch generators take a uint64 but some paths go through int64.
        return BinaryPrimitives.ReadUInt64LittleEndian(hash) >> 1;
    }
}
