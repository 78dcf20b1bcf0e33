using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// Rotary position embedding tables (Su et al. 2021) with transformers' rotate_half layout, over the first
/// <see cref="LlamaConfig.RotaryDim"/> dimensions of each head (Phi-3's partial rotary factor; all of them elsewhere).
/// </summary>
internal sealed class RotaryEmbedding : IDisposable
{
    private readonly LlamaConfig _config;
    private readonly Device _device;
    private readonly Table _short;
    private readonly Table? _long;

    public RotaryEmbedding(LlamaConfig config, Device device)
    {
        _config = config;
        _device = device;
        _short = new Table(RopeScaling.InverseFrequencies(config.RotaryDim, config.RopeTheta, config.RopeScaling));
        if (config.RopeScaling?.Type == "longrope")
        {
            _long = new Table(RopeScaling.InverseFrequencies(config.RotaryDim, config.RopeTheta, config.RopeScaling, longFactors: true));
        }
    }

    /// <summary>
    /// cos and sin of shape [length, rotary_dim] for positions start .. start + length - 1 of a sequence that is
    /// <paramref name="totalLength"/> long (cached; the caller must not dispose them).
    /// </summary>
    /// <remarks>LongRoPE picks its long factors for the whole sequence once it exceeds the original context, as transformers' longrope_frequency_update.</remarks>
    public (Tensor Cos, Tensor Sin) Tables(long start, long length, long totalLength)
    {
        Table table = UsesLongFactors(totalLength) ? _long! : _short;
        return table.Slice(start, length, _config.RopeScaling?.AttentionFactor ?? 1.0, _device);
    }

    /// <summary>Whether a sequence of this length rotates with different frequencies than a shorter one (LongRoPE past its original context).</summary>
    public bool UsesLongFactors(long totalLength) => _config.RopeScaling?.UsesLongFactors(totalLength) ?? false;

    /// <summary>Rotates the first cos.shape[-1] dimensions of x [.., T, head_dim] and passes the rest through.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = torch.NewDisposeScope();
        long rotary = cos.shape[^1];
        long headDim = x.shape[^1];
        Tensor rotated = rotary == headDim ? x : x.narrow(-1, 0, rotary);
        long half = rotary / 2;
        Tensor x1 = rotated.narrow(-1, 0, half);
        Tensor x2 = rotated.narrow(-1, half, half);
        Tensor turned = torch.cat([x2.neg(), x1], -1);
        Tensor embedded = rotated * cos + turned * sin;
        if (rotary != headDim)
        {
            // transformers Phi3 apply_rotary_pos_emb: cat((q_rot * cos) + (rotate_half(q_rot) * sin), q_pass).
            embedded = torch.cat([embedded, x.narrow(-1, rotary, headDim - rotary)], -1);
        }
        return embedded.MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _short.Dispose();
        _long?.Dispose();
    }

    private sealed class Table(float[] inverseFrequencies) : IDisposable
    {
        private Tensor? _cos;
        private Tensor? _sin;

        public (Tensor Cos, Tensor Sin) Slice(long start, long length, double attentionFactor, Device device)
        {
            long end = start + length;
            if (_cos is null || _cos.shape[0] < end)
            {
                _cos?.Dispose();
                _sin?.Dispose();
                long cached = Math.Max(end, 256);
                using var scope = torch.NewDisposeScope();
                // transformers: freqs = position_ids.float() @ inv_freq (float32), emb = cat(freqs, freqs),
                // cos = emb.cos() * attention_scaling.
                Tensor inv = torch.tensor(inverseFrequencies, ScalarType.Float32);
                Tensor positions = torch.arange(cached, ScalarType.Float32);
                Tensor freqs = torch.outer(positions, inv);
                Tensor emb = torch.cat([freqs, freqs], -1);
                Tensor cos = emb.cos();
                Tensor sin = emb.sin();
                if (attentionFactor != 1.0)
                {
                    cos = cos * attentionFactor;
                    sin = sin * attentionFactor;
                }
                _cos = cos.to(device).DetachFromDisposeScope();
                _sin = sin.to(device).DetachFromDisposeScope();
            }
            return (_cos.narrow(0, start, length), _sin!.narrow(0, start, length));
        }

        public void Dispose()
        {
            _cos?.Dispose();
            _sin?.Dispose();
        }
    }
}
