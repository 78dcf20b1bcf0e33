using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Federated.Training.Precision;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Lora;

/// <summary>
/// A linear layer y = x Wᵀ + b with an optional LoRA branch (scaling · B A x), named like Hugging Face and PEFT.
/// The frozen weight is dense in its storage type or quantized; its matmul runs in the compute type. Output, bias and
/// the LoRA branch are float32, the branch as two separate matmuls on float32 tensors (per-example gradients of A and
/// B need exactly its input and output gradient).
/// </summary>
internal sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    private readonly Parameter? _bias;
    private readonly ScalarType _computeType;
    private readonly Device _device;
    private Parameter? _weight;
    private FrozenWeight? _frozen;
    private Parameter? _loraA;
    private Parameter? _loraB;
    private double _scaling;
    private double _dropout;

    public LoraLinear(string name, long inFeatures, long outFeatures, bool hasBias, Device device)
        : this(name, inFeatures, outFeatures, hasBias, device, WeightStorage.Float32)
    {
    }

    public LoraLinear(string name, long inFeatures, long outFeatures, bool hasBias, Device device, WeightStorage storage)
        : base(name)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        ArgumentNullException.ThrowIfNull(storage);
        _computeType = storage.ComputeType;
        _device = device;
        if (storage.Quantization == BaseQuantization.None)
        {
            // Empty: weights are always loaded or initialised explicitly, so no time goes into a throw-away init.
            _weight = new Parameter(torch.empty([outFeatures, inFeatures], storage.WeightType, device), requires_grad: false);
            register_parameter("weight", _weight);
            if (storage.WeightType != storage.ComputeType)
            {
                _frozen = new DenseFrozenWeight(_weight);
            }
        }
        Quantization = storage.Quantization;
        if (hasBias)
        {
            _bias = new Parameter(torch.zeros([outFeatures], ScalarType.Float32, device), requires_grad: false);
            register_parameter("bias", _bias);
        }
    }

    public long InFeatures { get; }

    public long OutFeatures { get; }

    /// <summary>The dense frozen weight, or null when the weight is quantized.</summary>
    public Parameter? Weight => _weight;

    public Parameter? Bias => _bias;

    public BaseQuantization Quantization { get; }

    /// <summary>Bytes the frozen weight occupies in its storage form.</summary>
    public long WeightBytes => _weight is not null ? _weight.numel() * _weight.element_size() : _frozen?.StorageBytes ?? 0;

    public Parameter? LoraA => _loraA;

    public Parameter? LoraB => _loraB;

    public bool HasLora => _loraA is not null;

    public double Scaling => _scaling;

    /// <summary>Dropout probability on the LoRA branch's input in training.</summary>
    public double Dropout => _dropout;

    /// <summary>When false the LoRA branch is skipped (evaluation of the base model with an adapter attached).</summary>
    public bool LoraEnabled { get; set; } = true;

    /// <summary>When set, backward through the LoRA branch also leaves each example's gradient of A and B here (DP-SGD).</summary>
    internal PerExampleGradientSink? PerExampleGradients { get; set; }

    public override Tensor forward(Tensor input)
    {
        Tensor output = BaseForward(input);
        if (_loraA is null || _loraB is null || !LoraEnabled)
        {
            return output;
        }
        using Tensor x32 = input.to_type(ScalarType.Float32);
        Tensor x = _dropout > 0 && training ? nn.functional.dropout(x32, _dropout, true) : x32;
        // Only a pass that builds a graph has a backward; a checkpointed layer's first, gradient-free pass is skipped.
        using Tensor up = PerExampleGradients is { } sink && torch.is_grad_enabled()
            ? LoraBranchFunction.Apply(this, sink, x)
            : PlainBranch(x);
        if (!ReferenceEquals(x, x32))
        {
            x.Dispose();
        }
        return output.add_(up, _scaling);
    }

    private Tensor PlainBranch(Tensor x)
    {
        using Tensor down = nn.functional.linear(x, _loraA!);
        return nn.functional.linear(down, _loraB!);
    }

    /// <summary>The dense weight in the compute type for a caller's own matmul (a new tensor the caller disposes).</summary>
    public Tensor ComputeWeight()
    {
        if (_frozen is not null)
        {
            return _frozen.Dequantize(_computeType);
        }
        return _weight!.alias();
    }

    /// <summary>Replaces a quantized layer's weight with the quantized form of <paramref name="weight"/> [out, in].</summary>
    public void LoadQuantized(Tensor weight)
    {
        ArgumentNullException.ThrowIfNull(weight);
        if (Quantization == BaseQuantization.None)
        {
            throw new InvalidOperationException($"linear '{GetName()}' is not quantized");
        }
        FrozenWeight quantized = Quantization == BaseQuantization.Int8 ? Int8Weight.Quantize(weight) : Nf4Weight.Quantize(weight);
        _frozen?.Dispose();
        _frozen = quantized;
    }

    private Tensor BaseForward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        Tensor x = input.to_type(_computeType);
        Tensor output;
        if (_frozen is not null)
        {
            output = FrozenLinearFunction.Apply(_frozen, _computeType, x);
        }
        else if (_weight is not null)
        {
            output = nn.functional.linear(x, _weight);
        }
        else
        {
            throw new InvalidOperationException($"the weight of linear '{GetName()}' has not been loaded");
        }
        output = output.to_type(ScalarType.Float32);
        if (_bias is not null)
        {
            output = output + _bias;
        }
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>Adds A [r, in] (kaiming-uniform from a per-module seed, as PEFT) and B [out, r] = 0.</summary>
    public void AttachLora(LoraSettings settings, string modulePath)
    {
        if (_loraA is not null)
        {
            throw new InvalidOperationException($"module '{modulePath}' already has a LoRA adapter");
        }
        Device device = _device;
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
        if (_weight is null)
        {
            throw new InvalidOperationException($"cannot merge the adapter into the {Quantization} weight of '{GetName()}'; load the base without quantization to merge");
        }
        using (torch.no_grad())
        {
            // Summed in float32 and rounded once to the storage type, as PEFT merges into a bf16 base.
            using Tensor delta = _loraB.matmul(_loraA);
            using Tensor merged = _weight.to_type(ScalarType.Float32).add_(delta, _scaling);
            _weight.copy_(merged);
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

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _frozen?.Dispose();
            _frozen = null;
        }
        base.Dispose(disposing);
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
