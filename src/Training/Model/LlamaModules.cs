using Federated.Training.Lora;
using Federated.Training.Precision;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

// Submodules register themselves under Hugging Face's names (register_module / register_parameter) instead of
// RegisterComponents, so that named_parameters() yields exactly the checkpoint keys while fields keep _camelCase.

/// <summary>Root-mean-square layer norm (Zhang and Sennrich 2019), as transformers' LlamaRMSNorm.</summary>
internal sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    private readonly Parameter _weight;
    private readonly double _eps;

    public RmsNorm(string name, long size, double eps, Device device)
        : base(name)
    {
        _eps = eps;
        _weight = new Parameter(torch.ones([size], ScalarType.Float32, device), requires_grad: false);
        register_parameter("weight", _weight);
    }

    public Parameter Weight => _weight;

    public override Tensor forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        Tensor variance = input.pow(2).mean([-1L], keepdim: true);
        Tensor normed = input * torch.rsqrt(variance + _eps);
        return (normed * _weight).MoveToOuterDisposeScope();
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

/// <summary>Rotary position embedding tables (Su et al. 2021) with transformers' rotate_half layout.</summary>
internal sealed class RotaryEmbedding : IDisposable
{
    private readonly float[] _invFreq;
    private readonly Device _device;
    private Tensor? _cos;
    private Tensor? _sin;

    public RotaryEmbedding(LlamaConfig config, Device device)
    {
        _invFreq = RopeScaling.InverseFrequencies(config.HeadDim, config.RopeTheta, config.RopeScaling);
        _device = device;
    }

    /// <summary>cos and sin of shape [T, head_dim] for positions 0..T-1 (cached; the caller must not dispose them).</summary>
    public (Tensor Cos, Tensor Sin) Tables(long length)
    {
        if (_cos is null || _cos.shape[0] < length)
        {
            _cos?.Dispose();
            _sin?.Dispose();
            long cached = Math.Max(length, 256);
            using var scope = torch.NewDisposeScope();
            // transformers: freqs = position_ids.float() @ inv_freq (float32), emb = cat(freqs, freqs).
            Tensor inv = torch.tensor(_invFreq, ScalarType.Float32);
            Tensor positions = torch.arange(cached, ScalarType.Float32);
            Tensor freqs = torch.outer(positions, inv);
            Tensor emb = torch.cat([freqs, freqs], -1);
            _cos = emb.cos().to(_device).DetachFromDisposeScope();
            _sin = emb.sin().to(_device).DetachFromDisposeScope();
        }
        return (_cos.narrow(0, 0, length), _sin!.narrow(0, 0, length));
    }

    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = torch.NewDisposeScope();
        long half = x.shape[^1] / 2;
        Tensor x1 = x.narrow(-1, 0, half);
        Tensor x2 = x.narrow(-1, half, half);
        Tensor rotated = torch.cat([x2.neg(), x1], -1);
        return (x * cos + rotated * sin).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _cos?.Dispose();
        _sin?.Dispose();
    }
}

/// <summary>Multi-head attention with grouped key/value heads (Ainslie et al. 2023), as transformers' LlamaAttention.</summary>
internal sealed class LlamaAttention : nn.Module
{
    private readonly LoraLinear _q;
    private readonly LoraLinear _k;
    private readonly LoraLinear _v;
    private readonly LoraLinear _o;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;

    public LlamaAttention(LlamaConfig config, Device device, WeightStorage storage)
        : base("self_attn")
    {
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        _q = new LoraLinear("q_proj", config.HiddenSize, _heads * _headDim, config.QkvBias, device, storage);
        _k = new LoraLinear("k_proj", config.HiddenSize, _kvHeads * _headDim, config.QkvBias, device, storage);
        _v = new LoraLinear("v_proj", config.HiddenSize, _kvHeads * _headDim, config.QkvBias, device, storage);
        _o = new LoraLinear("o_proj", _heads * _headDim, config.HiddenSize, config.OutputBias, device, storage);
        register_module("q_proj", _q);
        register_module("k_proj", _k);
        register_module("v_proj", _v);
        register_module("o_proj", _o);
    }

    public IEnumerable<(string Name, LoraLinear Linear)> Projections()
    {
        yield return ("q_proj", _q);
        yield return ("k_proj", _k);
        yield return ("v_proj", _v);
        yield return ("o_proj", _o);
    }

    /// <param name="mask">Boolean [B, 1, T, T] (true = attend), or null for a purely causal mask.</param>
    public Tensor Forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask)
    {
        using var scope = torch.NewDisposeScope();
        long batch = hidden.shape[0], length = hidden.shape[1];
        Tensor q = _q.forward(hidden).view(batch, length, _heads, _headDim).transpose(1, 2);
        Tensor k = _k.forward(hidden).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
        Tensor v = _v.forward(hidden).view(batch, length, _kvHeads, _headDim).transpose(1, 2);
        q = RotaryEmbedding.Apply(q, cos, sin);
        k = RotaryEmbedding.Apply(k, cos, sin);
        k = RepeatKv(k, _heads / _kvHeads);
        v = RepeatKv(v, _heads / _kvHeads);
        Tensor attended = mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
            : nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        Tensor merged = attended.transpose(1, 2).reshape(batch, length, _heads * _headDim);
        return _o.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>transformers' repeat_kv: [B, kv, T, D] to [B, kv·groups, T, D], each kv head serving consecutive query heads.</summary>
    internal static Tensor RepeatKv(Tensor x, int groups)
    {
        if (groups == 1)
        {
            return x;
        }
        long b = x.shape[0], kv = x.shape[1], t = x.shape[2], d = x.shape[3];
        return x.unsqueeze(2).expand(b, kv, groups, t, d).reshape(b, kv * groups, t, d);
    }
}

/// <summary>The SiLU-gated feed-forward block: down(silu(gate(x)) · up(x)).</summary>
internal sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private readonly LoraLinear _gate;
    private readonly LoraLinear _up;
    private readonly LoraLinear _down;

    public LlamaMlp(LlamaConfig config, Device device, WeightStorage storage)
        : base("mlp")
    {
        _gate = new LoraLinear("gate_proj", config.HiddenSize, config.IntermediateSize, config.MlpBias, device, storage);
        _up = new LoraLinear("up_proj", config.HiddenSize, config.IntermediateSize, config.MlpBias, device, storage);
        _down = new LoraLinear("down_proj", config.IntermediateSize, config.HiddenSize, config.MlpBias, device, storage);
        register_module("gate_proj", _gate);
        register_module("up_proj", _up);
        register_module("down_proj", _down);
    }

    public IEnumerable<(string Name, LoraLinear Linear)> Projections()
    {
        yield return ("gate_proj", _gate);
        yield return ("up_proj", _up);
        yield return ("down_proj", _down);
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = torch.NewDisposeScope();
        Tensor gated = nn.functional.silu(_gate.forward(input)) * _up.forward(input);
        return _down.forward(gated).MoveToOuterDisposeScope();
    }
}

/// <summary>One pre-norm decoder block: attention and MLP, each with a residual connection.</summary>
internal sealed class LlamaDecoderLayer : nn.Module
{
    private readonly RmsNorm _inputNorm;
    private readonly LlamaAttention _attention;
    private readonly RmsNorm _postNorm;
    private readonly LlamaMlp _mlp;

    public LlamaDecoderLayer(int index, LlamaConfig config, Device device, WeightStorage storage)
        : base(index.ToString(System.Globalization.CultureInfo.InvariantCulture))
    {
        _inputNorm = new RmsNorm("input_layernorm", config.HiddenSize, config.RmsNormEps, device);
        _attention = new LlamaAttention(config, device, storage);
        _postNorm = new RmsNorm("post_attention_layernorm", config.HiddenSize, config.RmsNormEps, device);
        _mlp = new LlamaMlp(config, device, storage);
        register_module("input_layernorm", _inputNorm);
        register_module("self_attn", _attention);
        register_module("post_attention_layernorm", _postNorm);
        register_module("mlp", _mlp);
    }

    public IEnumerable<(string Name, LoraLinear Linear)> Projections() =>
        _attention.Projections().Select(p => ("self_attn." + p.Name, p.Linear))
            .Concat(_mlp.Projections().Select(p => ("mlp." + p.Name, p.Linear)));

    /// <summary>Whether a forward pass in training mode draws random numbers (LoRA dropout), which recomputation must replay.</summary>
    public bool UsesDropout => Projections().Any(p => p.Linear is { HasLora: true, LoraEnabled: true, Dropout: > 0 });

    public Tensor Forward(Tensor hidden, Tensor cos, Tensor sin, Tensor? mask)
    {
        using var scope = torch.NewDisposeScope();
        Tensor h = hidden + _attention.Forward(_inputNorm.forward(hidden), cos, sin, mask);
        Tensor output = h + _mlp.forward(_postNorm.forward(h));
        return output.MoveToOuterDisposeScope();
    }
}

/// <summary>The decoder stack without the head: embed_tokens, layers, final norm (transformers' LlamaModel).</summary>
internal sealed class LlamaBackbone : nn.Module
{
    private readonly TokenEmbedding _embed;
    private readonly ModuleList<LlamaDecoderLayer> _layers;
    private readonly LlamaDecoderLayer[] _layerArray;
    private readonly RmsNorm _norm;

    public LlamaBackbone(LlamaConfig config, Device device, WeightStorage storage)
        : base("model")
    {
        _embed = new TokenEmbedding("embed_tokens", config.VocabSize, config.HiddenSize, device, storage.WeightType);
        _layerArray = Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(i, config, device, storage)).ToArray();
        _layers = new ModuleList<LlamaDecoderLayer>(_layerArray);
        _norm = new RmsNorm("norm", config.HiddenSize, config.RmsNormEps, device);
        register_module("embed_tokens", _embed);
        register_module("layers", _layers);
        register_module("norm", _norm);
    }

    public TokenEmbedding Embed => _embed;

    public IReadOnlyList<LlamaDecoderLayer> Layers => _layerArray;

    /// <summary>Final-normed hidden states [B, T, hidden] in float32; <paramref name="checkpoint"/> recomputes each layer in backward.</summary>
    public Tensor Forward(Tensor ids, Tensor cos, Tensor sin, Tensor? mask, bool checkpoint)
    {
        using var scope = torch.NewDisposeScope();
        Tensor hidden = _embed.forward(ids);
        // Only a pass that builds a graph has activations worth dropping; inference runs the layers plainly.
        bool recompute = checkpoint && torch.is_grad_enabled();
        foreach (var layer in _layerArray)
        {
            hidden = recompute
                ? LayerCheckpoint.Apply(layer, hidden, cos, sin, mask)
                : layer.Forward(hidden, cos, sin, mask);
        }
        return _norm.forward(hidden).MoveToOuterDisposeScope();
    }
}
