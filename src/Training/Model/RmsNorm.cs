using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

// Submodules register themselves under Hugging Face's names (register_module / register_parameter) instead of
// RegisterComponents, so that named_parameters() yields exactly the checkpoint keys while fields keep _camelCase.

/// <summary>
/// Root-mean-square layer norm (Zhang and Sennrich 2019), computed in float32: transformers' LlamaRMSNorm scales by
/// the weight, Gemma2RMSNorm by (1 + weight) (its weights are stored as offsets from one).
/// </summary>
internal sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;
    private readonly double _eps;
    private readonly bool _unitOffset;

    public RmsNorm(string name, long size, double eps, Device device, bool unitOffset = false)
        : base(name)
    {
        _eps = eps;
        _unitOffset = unitOffset;
        _weight = new Parameter(torch.ones([size], ScalarType.Float32, device), requires_grad: false);
        register_parameter("weight", _weight);
    }

    public Parameter Weight => _weight;

    /// <summary>The stored weight value that leaves the input unscaled: 0 for (1 + weight) norms, else 1.</summary>
    public double IdentityWeight => _unitOffset ? 0.0 : 1.0;

    public override Tensor forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        Tensor x = input.dtype == ScalarType.Float32 ? input : input.to_type(ScalarType.Float32);
        Tensor variance = x.pow(2).mean([-1L], keepdim: true);
        Tensor normed = x * torch.rsqrt(variance + _eps);
        Tensor scaled = _unitOffset ? normed * (_weight + 1.0) : normed * _weight;
        Tensor output = scaled.dtype == input.dtype ? scaled : scaled.to_type(input.dtype);
        return output.MoveToOuterDisposeScope();
    }
}

/// <summary>Token embedding table [vocab, hidden] in the weight storage type, looked up by id into float32 rows.</summary>
internal sealed class TokenEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;

    public TokenEmbedding(string name, long vocab, long hidden, Device device, ScalarType weightType)
        : base(name)
    {
        _weight = new Parameter(torch.empty([vocab, hidden], weightType, device), requires_grad: false);
        register_parameter("weight", _weight);
    }

    public Parameter Weight => _weight;

    public override Tensor forward(Tensor ids)
    {
        using Tensor flat = ids.reshape(-1);
        using Tensor rows = _weight.index_select(0, flat);
        long[] shape = [.. ids.shape, _weight.shape[1]];
        using Tensor view = rows.view(shape);
        return view.to_type(ScalarType.Float32);
    }
}
