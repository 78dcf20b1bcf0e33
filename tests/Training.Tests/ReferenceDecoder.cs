using Federated.Training.Model;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

/// <summary>
/// A deliberately plain re-statement of the transformers forward passes of the supported families, for tests: one
/// token row at a time per head, explicit softmax over masked scores, each query head reading key/value head
/// h / groups, no fused kernels, no repeat_kv, no shared code with the model beyond config.json parsing and the
/// Llama 3 frequency scaling (which has its own test against transformers' values).
/// </summary>
/// <remarks>
/// Written from transformers' modeling_llama, modeling_mistral, modeling_qwen2, modeling_qwen3, modeling_phi3 and
/// modeling_gemma2: Qwen3 norms q and k per head before RoPE; Phi-3 splits qkv_proj into q, k, v rows and gate_up_proj
/// into gate then up, and rotates only the first head_dim · partial_rotary_factor dimensions; LongRoPE divides the
/// frequencies by short_factor (long_factor past original_max_position_embeddings) and scales cos and sin by
/// sqrt(1 + ln(factor) / ln(original)); Gemma 2 scales the embedding by sqrt(hidden), norms with (1 + w), norms each
/// block output before its residual, caps scores and logits with cap · tanh(x / cap), scales scores by
/// query_pre_attn_scalar^-1/2 and slides the window on even layers.
/// </remarks>
internal static class ReferenceDecoder
{
    public static Tensor Logits(string modelDirectory, long[] ids)
    {
        var config = LlamaConfig.Load(modelDirectory);
        using var checkpoint = SafeTensorsCheckpoint.Open(modelDirectory);
        Tensor W(string name) => checkpoint.ReadFloat32(name);
        Tensor Linear(Tensor x, string prefix, bool bias) =>
            bias ? x.matmul(W(prefix + ".weight").t()) + W(prefix + ".bias") : x.matmul(W(prefix + ".weight").t());
        bool gemma = config.ModelType == "gemma2";
        bool phi3 = config.ModelType == "phi3";
        Tensor Norm(Tensor x, string name)
        {
            Tensor normed = x / (x.pow(2).mean([-1L], keepdim: true) + config.RmsNormEps).sqrt();
            return gemma ? normed * (W(name) + 1) : normed * W(name);
        }
        Tensor Cap(Tensor x, double? cap) => cap is { } c ? (x / c).tanh() * c : x;

        int t = ids.Length, heads = config.NumAttentionHeads, kv = config.NumKeyValueHeads, d = config.HeadDim;
        int groups = heads / kv;
        var (cosT, sinT) = RotaryTables(config, t);
        int rd = (int)cosT.shape[1];
        Tensor Rope(Tensor x)
        {
            Tensor rot = x[.., ..rd], pass = x[.., rd..];
            Tensor x1 = rot[.., ..(rd / 2)], x2 = rot[.., (rd / 2)..];
            return torch.cat([rot * cosT + torch.cat([-x2, x1], 1) * sinT, pass], 1);
        }
        double scale = 1.0 / Math.Sqrt(config.QueryPreAttnScalar ?? d);

        Tensor h = W("model.embed_tokens.weight")[torch.tensor(ids)];
        if (gemma)
        {
            h = h * (float)Math.Sqrt(config.HiddenSize);
        }
        for (int layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            string p = $"model.layers.{layer}.";
            Tensor x = Norm(h, p + "input_layernorm.weight");
            Tensor q, k, v;
            if (phi3)
            {
                Tensor qkv = Linear(x, p + "self_attn.qkv_proj", false);
                q = qkv[.., ..(heads * d)];
                k = qkv[.., (heads * d)..((heads + kv) * d)];
                v = qkv[.., ((heads + kv) * d)..];
            }
            else
            {
                q = Linear(x, p + "self_attn.q_proj", config.QkvBias);
                k = Linear(x, p + "self_attn.k_proj", config.QkvBias);
                v = Linear(x, p + "self_attn.v_proj", config.QkvBias);
            }
            int? window = Slides(config, layer) ? config.SlidingWindow : null;
            var outputs = new List<Tensor>();
            for (int head = 0; head < heads; head++)
            {
                int kvHead = head / groups;
                Tensor qh = q[.., (head * d)..((head + 1) * d)];
                Tensor kh = k[.., (kvHead * d)..((kvHead + 1) * d)];
                Tensor vh = v[.., (kvHead * d)..((kvHead + 1) * d)];
                if (config.ModelType == "qwen3")
                {
                    qh = Norm(qh, p + "self_attn.q_norm.weight");
                    kh = Norm(kh, p + "self_attn.k_norm.weight");
                }
                Tensor scores = Cap(Rope(qh).matmul(Rope(kh).t()) * scale, config.AttnLogitSoftcapping);
                var hidden = new bool[t, t];
                for (int i = 0; i < t; i++)
                {
                    for (int j = 0; j < t; j++)
                    {
                        hidden[i, j] = j > i || (window is { } w && j <= i - w);
                    }
                }
                scores = scores.masked_fill(torch.tensor(hidden), double.NegativeInfinity);
                outputs.Add(scores.softmax(-1).matmul(vh));
            }
            Tensor attended = Linear(torch.cat(outputs, 1), p + "self_attn.o_proj", config.OutputBias);
            Tensor y;
            if (gemma)
            {
                h = h + Norm(attended, p + "post_attention_layernorm.weight");
                y = Norm(h, p + "pre_feedforward_layernorm.weight");
            }
            else
            {
                h = h + attended;
                y = Norm(h, p + "post_attention_layernorm.weight");
            }
            Tensor gate, up;
            if (phi3)
            {
                Tensor gateUp = Linear(y, p + "mlp.gate_up_proj", false);
                gate = gateUp[.., ..config.IntermediateSize];
                up = gateUp[.., config.IntermediateSize..];
            }
            else
            {
                gate = Linear(y, p + "mlp.gate_proj", config.MlpBias);
                up = Linear(y, p + "mlp.up_proj", config.MlpBias);
            }
            Tensor activated = config.HiddenActivation == "gelu_pytorch_tanh"
                ? gate * 0.5 * (((gate + gate.pow(3) * 0.044715) * Math.Sqrt(2 / Math.PI)).tanh() + 1)
                : gate * gate.sigmoid();
            Tensor mlp = Linear(activated * up, p + "mlp.down_proj", config.MlpBias);
            h = h + (gemma ? Norm(mlp, p + "post_feedforward_layernorm.weight") : mlp);
        }
        h = Norm(h, "model.norm.weight");
        string head_ = config.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        return Cap(h.matmul(W(head_).t()), config.FinalLogitSoftcapping);
    }

    /// <summary>Which layers slide, restated per family from the transformers configs.</summary>
    private static bool Slides(LlamaConfig config, int layer) => config.SlidingWindow is not null && config.ModelType switch
    {
        "mistral" or "phi3" => true,
        "qwen2" or "qwen3" => layer >= config.MaxWindowLayers,
        "gemma2" => layer % 2 == 0,
        _ => false,
    };

    /// <summary>cos and sin [t, rotary dims] for positions 0 .. t - 1, computed here for default rope and LongRoPE.</summary>
    private static (Tensor Cos, Tensor Sin) RotaryTables(LlamaConfig config, int t)
    {
        int dim = (int)(config.HeadDim * config.PartialRotaryFactor);
        var scaling = config.RopeScaling;
        float[] inv;
        double attention = 1.0;
        if (scaling?.Type == "longrope")
        {
            var ext = t > scaling.OriginalMaxPositionEmbeddings ? scaling.LongFactor : scaling.ShortFactor;
            inv = Enumerable.Range(0, dim / 2)
                .Select(i => 1f / ((float)ext[i] * MathF.Pow((float)config.RopeTheta, 2f * i / dim))).ToArray();
            double factor = (double)config.MaxPositionEmbeddings / scaling.OriginalMaxPositionEmbeddings;
            attention = factor <= 1 ? 1 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(scaling.OriginalMaxPositionEmbeddings));
        }
        else if (scaling is null)
        {
            inv = Enumerable.Range(0, dim / 2).Select(i => 1f / MathF.Pow((float)config.RopeTheta, 2f * i / dim)).ToArray();
        }
        else
        {
            inv = RopeScaling.InverseFrequencies(dim, config.RopeTheta, scaling);
        }
        var cos = new float[t, dim];
        var sin = new float[t, dim];
        for (int p = 0; p < t; p++)
        {
            for (int i = 0; i < dim; i++)
            {
                float angle = p * inv[i % (dim / 2)];
                cos[p, i] = (float)(MathF.Cos(angle) * attention);
                sin[p, i] = (float)(MathF.Sin(angle) * attention);
            }
        }
        return (torch.tensor(cos), torch.tensor(sin));
    }
}
