using Federated.Training.Lora;
using Federated.Training.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// A decoder-only causal language model of a supported family (transformers' LlamaForCausalLM, MistralForCausalLM,
/// Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM) in TorchSharp, with optional LoRA adapters.
/// Parameters carry Hugging Face names; the model lives on the device it was built on (it is never moved).
/// </summary>
public sealed partial class LlamaForCausalLM : nn.Module<Tensor, Tensor>
{
    private const string PeftPrefix = "base_model.model.";
    private readonly DecoderBackbone _model;
    private readonly Lora.LoraLinear? _lmHead;
    private readonly RotaryEmbedding _rotary;
    private LoraSettings? _lora;

    /// <summary>Builds the architecture with uninitialised weights on a device; load or initialise them before use.</summary>
    public LlamaForCausalLM(LlamaConfig config, Device? device = null)
        : base("LlamaForCausalLM")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        Device = device ?? torch.CPU;
        _model = new DecoderBackbone(config, Device);
        register_module("model", _model);
        if (!config.TieWordEmbeddings)
        {
            _lmHead = new Lora.LoraLinear("lm_head", config.HiddenSize, config.VocabSize, false, Device);
            register_module("lm_head", _lmHead);
        }
        _rotary = new RotaryEmbedding(config, Device);
        // Inference mode until a trainer says otherwise, as transformers' from_pretrained leaves models.
        eval();
    }

    public LlamaConfig Config { get; }

    public Device Device { get; }

    /// <summary>The LoRA settings in effect, or null without an adapter.</summary>
    public LoraSettings? Lora => _lora;

    /// <summary>Loads config.json and the safetensors weights of a Hugging Face folder into float32 on <paramref name="device"/>.</summary>
    public static LlamaForCausalLM FromPretrained(string modelDirectory, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        if (!Directory.Exists(modelDirectory))
        {
            throw new DirectoryNotFoundException($"model folder '{modelDirectory}' does not exist");
        }
        var config = LlamaConfig.Load(modelDirectory);
        var model = new LlamaForCausalLM(config, device);
        try
        {
            using var checkpoint = SafeTensorsCheckpoint.Open(modelDirectory);
            model.LoadWeights(checkpoint);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The base weights by Hugging Face name (LoRA tensors excluded).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> BaseWeights() =>
        named_parameters().Where(p => !IsLoraName(p.name)).Select(p => (p.name, (Tensor)p.parameter));

    /// <summary>Writes config.json and model.safetensors (e.g. after MergeLora) so that transformers loads the folder.</summary>
    public void SavePretrained(string directory, SafeTensorDType dtype = SafeTensorDType.F32)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (dtype is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "model weights must be F32, F16 or BF16");
        }
        Directory.CreateDirectory(directory);
        SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"),
            BaseWeights().Select(w => (w.Name, w.Tensor, dtype)), new Dictionary<string, string> { ["format"] = "pt" });
        string torchDtype = dtype switch
        {
            SafeTensorDType.BF16 => "bfloat16",
            SafeTensorDType.F16 => "float16",
            _ => "float32",
        };
        File.WriteAllText(Path.Combine(directory, "config.json"), (Config with { TorchDtype = torchDtype }).ToJson());
    }

    /// <summary>Copies every base weight from a checkpoint; a missing or mis-shaped tensor is an error naming it.</summary>
    public void LoadWeights(SafeTensorsCheckpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var targets = BaseWeights().ToList();
        foreach (var (name, target) in targets)
        {
            if (!checkpoint.Contains(name))
            {
                throw new InvalidDataException($"checkpoint is missing tensor '{name}' (expected shape [{string.Join(", ", target.shape)}])");
            }
            var info = checkpoint.Info(name);
            if (!info.Shape.SequenceEqual(target.shape))
            {
                throw new InvalidDataException(
                    $"checkpoint tensor '{name}' has shape [{string.Join(", ", info.Shape)}]; the config needs [{string.Join(", ", target.shape)}]");
            }
        }
        using (torch.no_grad())
        {
            foreach (var (name, target) in targets)
            {
                using Tensor source = checkpoint.ReadFloat32(name);
                target.copy_(source);
            }
        }
    }

    /// <summary>Logits [B, T, vocab] for token ids [B, T] with a causal mask only.</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds, null);

    /// <summary>Logits [B, T, vocab]; <paramref name="attentionMask"/> [B, T] (1 = token, 0 = padding) hides padded keys.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask)
    {
        RequireIds(inputIds);
        using var scope = torch.NewDisposeScope();
        Tensor ids = inputIds.device == Device ? inputIds : inputIds.to(Device);
        Tensor hidden = _model.Forward(ids, Inputs(0, inputIds.shape[1], attentionMask, null));
        return HeadLogits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Logits [B, T, vocab] of the new tokens <paramref name="inputIds"/> [B, T] that follow the cached ones; their keys
    /// and values are added to <paramref name="cache"/>. Inference only (no gradients); no padding.
    /// </summary>
    internal Tensor ForwardCached(Tensor inputIds, KvCache cache)
    {
        RequireIds(inputIds);
        ArgumentNullException.ThrowIfNull(cache);
        if (cache.Layers != Config.NumHiddenLayers)
        {
            throw new ArgumentException($"the cache has {cache.Layers} layers; the model has {Config.NumHiddenLayers}", nameof(cache));
        }
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Tensor ids = inputIds.device == Device ? inputIds : inputIds.to(Device);
        long length = ids.shape[1];
        if (cache.Length > 0 && _rotary.UsesLongFactors(cache.Length + length) != cache.LongFactors)
        {
            // LongRoPE moved every position to its long factors: the cached keys were rotated with the short ones.
            Tensor all = torch.cat([cache.TokenIds(), ids], 1);
            cache.Clear();
            return ForwardCached(all, cache).narrow(1, all.shape[1] - length, length).MoveToOuterDisposeScope();
        }
        long past = cache.Length;
        cache.LongFactors = _rotary.UsesLongFactors(past + length);
        Tensor hidden = _model.Forward(ids, Inputs(past, length, null, cache));
        cache.Advance(ids);
        return HeadLogits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>A fresh cache for this model's layers.</summary>
    internal KvCache NewCache(long capacity = 256) => new(Config.NumHiddenLayers, capacity);

    /// <summary>The logits of final hidden states [.., hidden]: the LM head (or the tied embedding), then Gemma 2's soft-capping.</summary>
    /// <remarks>A chunked head must call this per chunk so that final_logit_softcapping applies to every logit.</remarks>
    internal Tensor HeadLogits(Tensor hidden)
    {
        using var scope = torch.NewDisposeScope();
        Tensor logits = _lmHead is not null
            ? _lmHead.forward(hidden)
            : nn.functional.linear(hidden, _model.Embed.Weight);
        if (Config.FinalLogitSoftcapping is { } cap)
        {
            // transformers Gemma2ForCausalLM: logits = tanh(logits / cap) * cap.
            logits = logits.div(cap).tanh().mul(cap);
        }
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>Mean token cross-entropy over positions whose label is not -100 (labels already shifted).</summary>
    public static Tensor Loss(Tensor logits, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(labels);
        using var scope = torch.NewDisposeScope();
        Tensor flatLogits = logits.reshape(-1, logits.shape[^1]);
        Tensor flatLabels = labels.to(logits.device).reshape(-1);
        return nn.functional.cross_entropy(flatLogits, flatLabels, ignore_index: Data.TokenizedExample.IgnoreIndex)
            .MoveToOuterDisposeScope();
    }

    /// <summary>Summed token cross-entropy over labelled positions (for exact averaging across accumulated micro-batches).</summary>
    public static Tensor SummedLoss(Tensor logits, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(labels);
        using var scope = torch.NewDisposeScope();
        Tensor flatLogits = logits.reshape(-1, logits.shape[^1]);
        Tensor flatLabels = labels.to(logits.device).reshape(-1);
        return nn.functional.cross_entropy(flatLogits, flatLabels, ignore_index: Data.TokenizedExample.IgnoreIndex,
            reduction: nn.Reduction.Sum).MoveToOuterDisposeScope();
    }

    /// <summary>Initialises base weights like transformers' _init_weights (normal(0, std), norms the identity, biases 0) from a seed.</summary>
    public void InitializeRandom(long seed, double std = 0.02)
    {
        using var gen = new Generator((ulong)seed);
        using (torch.no_grad())
        {
            foreach (var (name, tensor) in BaseWeights())
            {
                if (name.EndsWith("norm.weight", StringComparison.Ordinal))
                {
                    tensor.fill_(_model.NormIdentityWeight);
                }
                else if (name.EndsWith(".bias", StringComparison.Ordinal))
                {
                    tensor.zero_();
                }
                else
                {
                    using Tensor values = torch.randn(tensor.shape, ScalarType.Float32, torch.CPU, generator: gen).mul_(std);
                    tensor.copy_(values);
                }
            }
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _rotary.Dispose();
        }
        base.Dispose(disposing);
    }

    private static void RequireIds(Tensor inputIds)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2 || inputIds.shape[1] == 0)
        {
            throw new ArgumentException($"input ids must be [batch, sequence] with at least one token; got [{string.Join(", ", inputIds.shape)}]", nameof(inputIds));
        }
    }

    /// <summary>Rotary tables and masks for positions past .. past + length - 1.</summary>
    private AttentionInputs Inputs(long past, long length, Tensor? attentionMask, KvCache? cache)
    {
        var (cos, sin) = _rotary.Tables(past, length, past + length);
        Tensor? full = AttentionMask.Build(past, length, null, attentionMask, Device);
        bool anySliding = Enumerable.Range(0, Config.NumHiddenLayers).Any(Config.LayerSlides);
        Tensor? sliding = anySliding ? AttentionMask.Build(past, length, Config.SlidingWindow, attentionMask, Device) : null;
        return new AttentionInputs(cos, sin, full, sliding, cache);
    }
}
