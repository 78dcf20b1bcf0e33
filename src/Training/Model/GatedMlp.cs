using Federated.Training.Lora;
using Federated.Training.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// The gated feed-forward block down(act(gate(x)) · up(x)): SiLU for Llama, Mistral, Qwen and Phi-3, GELU-tanh for
/// Gemma 2; gate and up are one gate_up_proj on Phi-3.
/// </summary>
internal sealed class GatedMlp : nn.Module<Tensor, Tensor>
{
    private readonly LoraLinear? _gate;
    private readonly LoraLinear? _up;
    private readonly LoraLinear? _gateUp;
    private readonly LoraLinear _down;
    private readonly string _activation;
    private readonly long _intermediate;

    public GatedMlp(LlamaConfig config, Device device, WeightStorage storage)
        : base("mlp")
    {
        _activation = config.HiddenActivation;
        _intermediate = config.IntermediateSize;
        if (config.HasFusedProjections)
        {
            // transformers Phi3MLP: gate, up = gate_up_proj(x).chunk(2, dim=-1); phi3 has no MLP bias.
            _gateUp = new LoraLinear("gate_up_proj", config.HiddenSize, 2 * _intermediate, false, device, storage);
            register_module("gate_up_proj", _gateUp);
        }
        else
        {
            _gate = new LoraLinear("gate_proj", config.HiddenSize, _intermediate, config.MlpBias, device, storage);
            _up = new LoraLinear("up_proj", config.HiddenSize, _intermediate, config.MlpBias, device, storage);
            register_module("gate_proj", _gate);
            register_module("up_proj", _up);
        }
        _down = new LoraLinear("down_proj", _intermediate, config.HiddenSize, config.MlpBias, device, storage);
        register_module("down_proj", _down);
    }

    public IEnumerable<(string Name, LoraLinear Linear)> Projections()
    {
        if (_gateUp is not null)
        {
            yield return ("gate_up_proj", _gateUp);
        }
        else
        {
            yield return ("gate_proj", _gate!);
            yield return ("up_proj", _up!);
        }
        yield return ("down_proj", _down);
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        Tensor gate, up;
        if (_gateUp is not null)
        {
            Tensor both = _gateUp.forward(input);
            gate = both.narrow(-1, 0, _intermediate);
            up = both.narrow(-1, _intermediate, _intermediate);
        }
        else
        {
            gate = _gate!.forward(input);
            up = _up!.forward(input);
        }
        return _down.forward(Activate(gate) * up).MoveToOuterDisposeScope();
    }

    private Tensor Activate(Tensor x) => _activation switch
    {
        "silu" => nn.functional.silu(x),
        "gelu" => nn.functional.gelu(x),
        // GELU's tanh approximation (Hendrycks and Gimpel 2016), transformers' gelu_pytorch_tanh.
        _ => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
    };
}
