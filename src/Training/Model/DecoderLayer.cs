using System.Globalization;
using Federated.Training.Lora;
using Federated.Training.Precision;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// One pre-norm decoder block: attention and MLP, each with a residual connection. Gemma 2 norms each block's output
/// again before its residual (post_attention_layernorm, post_feedforward_layernorm) and the MLP's input with
/// pre_feedforward_layernorm; elsewhere post_attention_layernorm is the MLP's input norm.
/// </summary>
internal sealed class DecoderLayer : nn.Module
{
    private readonly RmsNorm _inputNorm;
    private readonly DecoderAttention _attention;
    private readonly RmsNorm _postAttentionNorm;
    private readonly RmsNorm? _preFeedforwardNorm;
    private readonly RmsNorm? _postFeedforwardNorm;
    private readonly GatedMlp _mlp;

    public DecoderLayer(int index, LlamaConfig config, Device device, WeightStorage storage)
        : base(index.ToString(CultureInfo.InvariantCulture))
    {
        bool gemma = config.IsGemma2;
        _inputNorm = new RmsNorm("input_layernorm", config.HiddenSize, config.RmsNormEps, device, gemma);
        _attention = new DecoderAttention(index, config, device, storage);
        _postAttentionNorm = new RmsNorm("post_attention_layernorm", config.HiddenSize, config.RmsNormEps, device, gemma);
        _mlp = new GatedMlp(config, device, storage);
        register_module("input_layernorm", _inputNorm);
        register_module("self_attn", _attention);
        register_module("post_attention_layernorm", _postAttentionNorm);
        if (gemma)
        {
            _preFeedforwardNorm = new RmsNorm("pre_feedforward_layernorm", config.HiddenSize, config.RmsNormEps, device, true);
            _postFeedforwardNorm = new RmsNorm("post_feedforward_layernorm", config.HiddenSize, config.RmsNormEps, device, true);
            register_module("pre_feedforward_layernorm", _preFeedforwardNorm);
            register_module("post_feedforward_layernorm", _postFeedforwardNorm);
        }
        register_module("mlp", _mlp);
    }

    public IEnumerable<(string Name, LoraLinear Linear)> Projections() =>
        _attention.Projections().Select(p => ("self_attn." + p.Name, p.Linear))
            .Concat(_mlp.Projections().Select(p => ("mlp." + p.Name, p.Linear)));

    /// <summary>Whether a forward pass in training mode draws random numbers (LoRA dropout), which recomputation must replay.</summary>
    public bool UsesDropout => Projections().Any(p => p.Linear is { HasLora: true, LoraEnabled: true, Dropout: > 0 });

    public Tensor Forward(Tensor hidden, AttentionInputs inputs)
    {
        using var scope = torch.NewDisposeScope();
        Tensor attended = _attention.Forward(_inputNorm.forward(hidden), inputs);
        Tensor output;
        if (_preFeedforwardNorm is not null)
        {
            Tensor h = hidden + _postAttentionNorm.forward(attended);
            output = h + _postFeedforwardNorm!.forward(_mlp.forward(_preFeedforwardNorm.forward(h)));
        }
        else
        {
            Tensor h = hidden + attended;
            output = h + _mlp.forward(_postAttentionNorm.forward(h));
        }
        return output.MoveToOuterDisposeScope();
    }
}

/// <summary>The decoder stack without the head: embed_tokens, layers, final norm (transformers' LlamaModel and its kin).</summary>
internal sealed class DecoderBackbone : nn.Module
{
    private readonly TokenEmbedding _embed;
    private readonly ModuleList<DecoderLayer> _layers;
    private readonly DecoderLayer[] _layerArray;
    private readonly RmsNorm _norm;
    private readonly double _embeddingScale;

    public DecoderBackbone(LlamaConfig config, Device device, WeightStorage storage)
        : base("model")
    {
        _embed = new TokenEmbedding("embed_tokens", config.VocabSize, config.HiddenSize, device, storage.WeightType);
        _layerArray = Enumerable.Range(0, config.NumHiddenLayers).Select(i => new DecoderLayer(i, config, device, storage)).ToArray();
        _layers = new ModuleList<DecoderLayer>(_layerArray);
        _norm = new RmsNorm("norm", config.HiddenSize, config.RmsNormEps, device, config.IsGemma2);
        // transformers Gemma2Model: hidden_states * torch.tensor(hidden_size ** 0.5, dtype=hidden_states.dtype).
        _embeddingScale = config.IsGemma2 ? (float)Math.Sqrt(config.HiddenSize) : 1.0;
        register_module("embed_tokens", _embed);
        register_module("layers", _layers);
        register_module("norm", _norm);
    }

    public TokenEmbedding Embed => _embed;

    public IReadOnlyList<DecoderLayer> Layers => _layerArray;

    /// <summary>The value a freshly initialised norm weight holds (0 for Gemma 2's (1 + weight) norms).</summary>
    public double NormIdentityWeight => _norm.IdentityWeight;

    /// <summary>Final-normed hidden states [B, T, hidden] in float32; <paramref name="checkpoint"/> recomputes each layer in backward.</summary>
    public Tensor Forward(Tensor ids, AttentionInputs inputs, bool checkpoint)
    {
        using var scope = torch.NewDisposeScope();
        Tensor hidden = _embed.forward(ids);
        if (_embeddingScale != 1.0)
        {
            hidden = hidden * _embeddingScale;
        }
        // Only a pass that builds a graph has activations worth dropping; inference runs the layers plainly.
        bool recompute = checkpoint && torch.is_grad_enabled() && inputs.Cache is null;
        foreach (var layer in _layerArray)
        {
            hidden = recompute ? LayerCheckpoint.Apply(layer, hidden, inputs) : layer.Forward(hidden, inputs);
        }
        return _norm.forward(hidden).MoveToOuterDisposeScope();
    }
}
