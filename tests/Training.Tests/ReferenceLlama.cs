using Federated.Training.Model;
using Federated.Training.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Tests;

/// <summary>
/// A deliberately plain re-statement of transformers' Llama forward pass for tests: explicit per-head attention with
/// softmax over masked scores, each query head reading key/value head h / groups, no fused kernels, no repeat_kv.
/// </summary>
internal static class ReferenceLlama
{
    public static Tensor Logits(string modelDirectory, long[] ids)
    {
        var config = LlamaConfig.Load(modelDirectory);
        using var checkpoint = SafeTensorsCheckpoint.Open(modelDirectory);
        Tensor W(string name) => checkpoint.ReadFloat32(name);
        Tensor Linear(Tensor x, string prefix, bool bias) =>
            bias ? x.matmul(W(prefix + ".weight").t()) + W(prefix + ".bias") : x.matmul(W(prefix + ".weight").t());
        Tensor Norm(Tensor x, string name) =>
            x / (x.pow(2).mean([-1L], keepdim: true) + config.RmsNormEps).sqrt() * W(name);

        int t = ids.Length, heads = config.NumAttentionHeads, kv = config.NumKeyValueHeads, d = config.HeadDim;
        int groups = heads / kv;
        float[] inv = RopeScaling.InverseFrequencies(d, config.RopeTheta, config.RopeScaling);
        var cos = new float[t, d];
        var sin = new float[t, d];
        for (int p = 0; p < t; p++)
        {
            for (int i = 0; i < d; i++)
            {
                float angle = p * inv[i % (d / 2)];
                cos[p, i] = MathF.Cos(angle);
                sin[p, i] = MathF.Sin(angle);
            }
        }
        Tensor cosT = torch.tensor(cos), sinT = torch.tensor(sin);
        Tensor Rope(Tensor x)
        {
            Tensor x1 = x[.., ..(d / 2)], x2 = x[.., (d / 2)..];
            return x * cosT + torch.cat([-x2, x1], 1) * sinT;
        }

        Tensor h = W("model.embed_tokens.weight")[torch.tensor(ids)];
        for (int layer = 0; layer < config.NumHiddenLayers; layer++)
        {
            string p = $"model.layers.{layer}.";
            Tensor x = Norm(h, p + "input_layernorm.weight");
            Tensor q = Linear(x, p + "self_attn.q_proj", config.QkvBias);
            Tensor k = Linear(x, p + "self_attn.k_proj", config.QkvBias);
            Tensor v = Linear(x, p + "self_attn.v_proj", config.QkvBias);
            var outputs = new List<Tensor>();
            for (int head = 0; head < heads; head++)
            {
                int kvHead = head / groups;
                Tensor qh = Rope(q[.., (head * d)..((head + 1) * d)]);
                Tensor kh = Rope(k[.., (kvHead * d)..((kvHead + 1) * d)]);
                Tensor vh = v[.., (kvHead * d)..((kvHead + 1) * d)];
                Tensor scores = qh.matmul(kh.t()) / Math.Sqrt(d);
                Tensor future = torch.ones(t, t).triu(1).to_type(ScalarType.Bool);
                scores = scores.masked_fill(future, double.NegativeInfinity);
                outputs.Add(scores.softmax(-1).matmul(vh));
            }
            h = h + Linear(torch.cat(outputs, 1), p + "self_attn.o_proj", config.OutputBias);
            Tensor y = Norm(h, p + "post_attention_layernorm.weight");
            Tensor gate = Linear(y, p + "mlp.gate_proj", config.MlpBias);
            Tensor up = Linear(y, p + "mlp.up_proj", config.MlpBias);
            h = h + Linear(gate * gate.sigmoid() * up, p + "mlp.down_proj", config.MlpBias);
        }
        h = Norm(h, "model.norm.weight");
        string head_ = config.TieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        return h.matmul(W(head_).t());
    }
}
