using Federated.Training.Lora;
using Federated.Training.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// Multi-head attention with grouped key/value heads (Ainslie et al. 2023) as transformers' LlamaAttention, with the
/// family variants: Phi-3's fused qkv_proj, Qwen3's per-head q_norm / k_norm, Gemma 2's query_pre_attn_scalar and
/// score soft-capping, and sliding-window layers.
/// </summary>
internal sealed class DecoderAttention : nn.Module
{
    private readonly LoraLinear? _q;
    private readonly LoraLinear? _k;
    private readonly LoraLinear? _v;
    private readonly LoraLinear? _qkv;
    private readonly LoraLinear _o;
    private readonly RmsNorm? _qNorm;
    private readonly RmsNorm? _kNorm;
    private readonly int _layer;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;
    private readonly double _scale;
    private readonly double? _softcap;

    public DecoderAttention(int layer, LlamaConfig config, Device device, WeightStorage storage)
        : base("self_attn")
    {
        _layer = layer;
        _heads = config.NumAttentionHeads;
        _kvHeads = config.NumKeyValueHeads;
        _headDim = config.HeadDim;
        _scale = config.AttentionScale;
        _softcap = config.AttnLogitSoftcapping;
        Sliding = config.LayerSlides(layer);
        long hidden = config.HiddenSize;
        long queryWidth = (long)_heads * _headDim;
        long kvWidth = (long)_kvHeads * _headDim;
        if (config.HasFusedProjections)
        {
            // transformers Phi3Attention: qkv_proj rows are the query heads, then the key heads, then the value heads.
            _qkv = new LoraLinear("qkv_proj", hidden, queryWidth + 2 * kvWidth, false, device, storage);
            register_module("qkv_proj", _qkv);
        }
        else
        {
            _q = new LoraLinear("q_proj", hidden, queryWidth, config.QkvBias, device, storage);
            _k = new LoraLinear("k_proj", hidden, kvWidth, config.QkvBias, device, storage);
            _v = new LoraLinear("v_proj", hidden, kvWidth, config.QkvBias, device, storage);
            register_module("q_proj", _q);
            register_module("k_proj", _k);
            register_module("v_proj", _v);
        }
        _o = new LoraLinear("o_proj", queryWidth, hidden, config.OutputBias, device, storage);
        register_module("o_proj", _o);
        if (config.HasQkNorm)
        {
            _qNorm = new RmsNorm("q_norm", _headDim, config.RmsNormEps, device);
            _kNorm = new RmsNorm("k_norm", _headDim, config.RmsNormEps, device);
            register_module("q_norm", _qNorm);
            register_module("k_norm", _kNorm);
        }
    }

    /// <summary>Whether this layer attends through the sliding window.</summary>
    public bool Sliding { get; }

    public IEnumerable<(string Name, LoraLinear Linear)> Projections()
    {
        if (_qkv is not null)
        {
            yield return ("qkv_proj", _qkv);
        }
        else
        {
            yield return ("q_proj", _q!);
            yield return ("k_proj", _k!);
            yield return ("v_proj", _v!);
        }
        yield return ("o_proj", _o);
    }

    public Tensor Forward(Tensor hidden, AttentionInputs inputs)
    {
        using var scope = torch.NewDisposeScope();
        long batch = hidden.shape[0], length = hidden.shape[1];
        var (q, k, v) = Project(hidden);
        q = q.view(batch, length, _heads, _headDim);
        k = k.view(batch, length, _kvHeads, _headDim);
        v = v.view(batch, length, _kvHeads, _headDim);
        if (_qNorm is not null)
        {
            // transformers Qwen3Attention: q_norm(q_proj(x).view(..., head_dim)) before the rotary embedding.
            q = _qNorm.forward(q);
            k = _kNorm!.forward(k);
        }
        q = RotaryEmbedding.Apply(q.transpose(1, 2), inputs.Cos, inputs.Sin);
        k = RotaryEmbedding.Apply(k.transpose(1, 2), inputs.Cos, inputs.Sin);
        v = v.transpose(1, 2);
        if (inputs.Cache is { } cache)
        {
            (k, v) = cache.Append(_layer, k, v);
        }
        int groups = _heads / _kvHeads;
        k = RepeatKv(k, groups);
        v = RepeatKv(v, groups);
        Tensor? mask = inputs.MaskFor(Sliding);
        Tensor attended = _softcap is { } cap ? SoftcappedAttention(q, k, v, mask, cap) : FusedAttention(q, k, v, mask);
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

    private (Tensor Q, Tensor K, Tensor V) Project(Tensor hidden)
    {
        if (_qkv is null)
        {
            return (_q!.forward(hidden), _k!.forward(hidden), _v!.forward(hidden));
        }
        Tensor qkv = _qkv.forward(hidden);
        long queryWidth = (long)_heads * _headDim, kvWidth = (long)_kvHeads * _headDim;
        return (qkv.narrow(-1, 0, queryWidth), qkv.narrow(-1, queryWidth, kvWidth), qkv.narrow(-1, queryWidth + kvWidth, kvWidth));
    }

    private Tensor FusedAttention(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        // scaled_dot_product_attention divides by sqrt(head_dim); a different scale is folded into q.
        double defaultScale = 1.0 / Math.Sqrt(_headDim);
        if (Math.Abs(_scale - defaultScale) > 1e-12 * defaultScale)
        {
            q = q * (_scale / defaultScale);
        }
        return mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
            : nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
    }

    /// <summary>Gemma 2's eager attention: scores · scale, soft-capped as cap · tanh(score / cap), masked, softmax in float32.</summary>
    private Tensor SoftcappedAttention(Tensor q, Tensor k, Tensor v, Tensor? mask, double cap)
    {
        Tensor scores = q.matmul(k.transpose(2, 3)).mul(_scale);
        scores = scores.div(cap).tanh().mul(cap);
        if (mask is null)
        {
            long length = q.shape[2];
            mask = torch.ones([length, length], ScalarType.Bool, q.device).tril();
        }
        scores = scores.masked_fill(mask.logical_not(), double.NegativeInfinity);
        Tensor weights = scores.to_type(ScalarType.Float32).softmax(-1).to_type(q.dtype);
        return weights.matmul(v);
    }
}
