using Federated.Training.Lora;
using Federated.Training.Precision;
using Federated.Training.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// A decoder-only causal language model of a supported family (transformers' LlamaForCausalLM, MistralForCausalLM,
/// Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM) in TorchSharp, with optional LoRA adapters.
/// Parameters carry Hugging Face names; the model lives on the device it was built on (it is never moved). Frozen
/// weights are held as <see cref="Storage"/> says; activations, norms, softmax, the loss and LoRA are float32.
/// </summary>
public sealed partial class LlamaForCausalLM : nn.Module<Tensor, Tensor>
{
    private const string PeftPrefix = "base_model.model.";
    private readonly DecoderBackbone _model;
    private readonly Lora.LoraLinear? _lmHead;
    private readonly RotaryEmbedding _rotary;
    private LoraSettings? _lora;

    /// <summary>Builds the architecture with uninitialised float32 weights on a device; load or initialise them before use.</summary>
    public LlamaForCausalLM(LlamaConfig config, Device? device = null)
        : this(config, device, WeightStorage.Float32)
    {
    }

    /// <summary>Builds the architecture with frozen weights held as <paramref name="storage"/> says (quantized ones are filled by loading).</summary>
    public LlamaForCausalLM(LlamaConfig config, Device? device, WeightStorage storage)
        : base("LlamaForCausalLM")
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(storage);
        config.Validate();
        storage.Validate();
        Config = config;
        Storage = storage;
        Device = device ?? torch.CPU;
        _model = new DecoderBackbone(config, Device, storage);
        register_module("model", _model);
        if (!config.TieWordEmbeddings)
        {
            // The head is never quantized (as bitsandbytes leaves lm_head): its error would reach every logit.
            _lmHead = new Lora.LoraLinear("lm_head", config.HiddenSize, config.VocabSize, false, Device,
                storage with { Quantization = BaseQuantization.None });
            register_module("lm_head", _lmHead);
        }
        _rotary = new RotaryEmbedding(config, Device);
        CheckpointActivations = ModelMemoryEstimate.ParameterCount(config) > ModelLoadOptions.CheckpointByDefaultAbove;
        // Inference mode until a trainer says otherwise, as transformers' from_pretrained leaves models.
        eval();
    }

    public LlamaConfig Config { get; }

    public Device Device { get; }

    /// <summary>Element types and quantization of the frozen weights.</summary>
    public WeightStorage Storage { get; }

    /// <summary>Recompute each decoder layer in backward instead of keeping its activations (equal gradients, one more forward).</summary>
    public bool CheckpointActivations { get; set; }

    /// <summary>Tokens per chunk of the LM head and loss; 0 sizes chunks to about 32 MiB of float32 logits.</summary>
    public int LossChunkTokens
    {
        get;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            field = value;
        }
    }

    /// <summary>The LoRA settings in effect, or null without an adapter.</summary>
    public LoraSettings? Lora => _lora;

    /// <summary>Loads config.json and the safetensors weights of a Hugging Face folder with float32 matmuls (<see cref="ModelLoadOptions.Float32"/>).</summary>
    public static LlamaForCausalLM FromPretrained(string modelDirectory, Device? device = null) =>
        FromPretrained(modelDirectory, device, ModelLoadOptions.Float32);

    /// <summary>
    /// Loads a Hugging Face folder: checks config.json against the checkpoint (names, shapes, dtype), resolves the precision
    /// for the device, estimates memory before reading any weight, then streams each weight straight into its storage form.
    /// 16-bit checkpoints stay 16-bit in memory; float32 ones are stored in the compute type.
    /// </summary>
    public static LlamaForCausalLM FromPretrained(string modelDirectory, Device? device, ModelLoadOptions options)
    {
        ArgumentNullException.ThrowIfNull(modelDirectory);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!Directory.Exists(modelDirectory))
        {
            throw new DirectoryNotFoundException($"model folder '{modelDirectory}' does not exist");
        }
        device ??= torch.CPU;
        var config = LlamaConfig.Load(modelDirectory);
        using var checkpoint = SafeTensorsCheckpoint.Open(modelDirectory);
        SafeTensorDType stored = CheckpointLoading.FloatType(config, checkpoint);
        ScalarType compute = PrecisionChoices.ComputeType(options.Precision, options.Capabilities ?? DeviceCapabilities.Detect(device));
        PrecisionChoices.CheckQuantization(options.Quantization, device);
        ScalarType weightType = stored == SafeTensorDType.F32 ? compute : SafeTensorDTypes.ToScalarType(stored);
        var storage = new WeightStorage(weightType, compute, options.Quantization);
        bool checkpointActivations = options.CheckpointActivations
            ?? ModelMemoryEstimate.CheckpointByDefault(config, storage, options.Workload);
        ModelFit.Check(modelDirectory, config, storage, options, checkpointActivations, device);
        var model = new LlamaForCausalLM(config, device, storage)
        {
            CheckpointActivations = checkpointActivations,
            LossChunkTokens = options.LossChunkTokens,
        };
        try
        {
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

    /// <summary>Bytes the base weights occupy in their storage form (quantized projections included, LoRA excluded).</summary>
    public long WeightBytes() =>
        BaseWeights().Sum(w => w.Tensor.numel() * w.Tensor.element_size()) + AllLinears().Where(l => l.Linear.Weight is null).Sum(l => l.Linear.WeightBytes);

    /// <summary>Writes config.json and model.safetensors (e.g. after MergeLora) so that transformers loads the folder.</summary>
    public void SavePretrained(string directory, SafeTensorDType dtype = SafeTensorDType.F32)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (dtype is not (SafeTensorDType.F32 or SafeTensorDType.F16 or SafeTensorDType.BF16))
        {
            throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "model weights must be F32, F16 or BF16");
        }
        RequireUnquantized("save the model");
        Directory.CreateDirectory(directory);
        SafeTensorsWriter.Write(Path.Combine(directory, "model.safetensors"),
            BaseWeights().Select(w => (w.Name, w.Tensor, dtype)), new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(directory, "config.json"),
            (Config with { TorchDtype = SafeTensorDTypes.ToTorchDtypeName(dtype), DeclaresTorchDtype = true }).ToJson());
    }

    /// <summary>Reads every base weight from a checkpoint; a missing, extra or mis-shaped tensor is an error naming it.</summary>
    public void LoadWeights(SafeTensorsCheckpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var slots = BaseWeights().Select(w => WeightSlot.Dense(w.Name, w.Tensor)).ToList();
        foreach (var (path, linear) in AllLinears().Where(l => l.Linear.Weight is null))
        {
            slots.Add(WeightSlot.Quantized(path + ".weight", linear, Device));
        }
        CheckpointLoading.Load(slots, checkpoint, Config);
    }

    /// <summary>Logits [B, T, vocab] for token ids [B, T] with a causal mask only.</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds, null);

    /// <summary>Logits [B, T, vocab] in float32; <paramref name="attentionMask"/> [B, T] (1 = token, 0 = padding) hides padded keys.</summary>
    /// <remarks>Materializes every logit: for training and evaluation losses use <see cref="SummedTokenLoss"/>.</remarks>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = torch.NewDisposeScope();
        Tensor hidden = ForwardHidden(inputIds, attentionMask);
        return HeadLogits(hidden).MoveToOuterDisposeScope();
    }

    /// <summary>The final-normed hidden states [B, T, hidden] in float32 (before the LM head).</summary>
    public Tensor ForwardHidden(Tensor inputIds, Tensor? attentionMask)
    {
        RequireIds(inputIds);
        using var scope = torch.NewDisposeScope();
        Tensor ids = inputIds.device == Device ? inputIds : inputIds.to(Device);
        AttentionInputs inputs = Inputs(0, inputIds.shape[1], attentionMask, null);
        return _model.Forward(ids, inputs, CheckpointActivations && training).MoveToOuterDisposeScope();
    }

    /// <summary>Float32 logits of final hidden states [.., hidden]: the LM head (or the tied embedding) in the compute type, then Gemma 2's soft-capping.</summary>
    internal Tensor HeadLogits(Tensor hidden)
    {
        using var scope = torch.NewDisposeScope();
        Tensor logits;
        if (_lmHead is not null)
        {
            logits = _lmHead.forward(hidden);
        }
        else
        {
            using Tensor weight = HeadWeight();
            logits = nn.functional.linear(hidden.to_type(Storage.ComputeType), weight).to_type(ScalarType.Float32);
        }
        if (Config.FinalLogitSoftcapping is { } cap)
        {
            // transformers Gemma2ForCausalLM: logits = tanh(logits / cap) * cap.
            logits = logits.div(cap).tanh().mul(cap);
        }
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Summed token cross-entropy over positions whose (already shifted) label is not -100, through the chunked LM head:
    /// the [tokens x vocabulary] logits never exist whole, in forward or backward. Divide by the labelled token count for the mean.
    /// </summary>
    public Tensor SummedTokenLoss(Tensor inputIds, Tensor labels, Tensor? attentionMask)
    {
        ArgumentNullException.ThrowIfNull(labels);
        using var scope = torch.NewDisposeScope();
        Tensor hidden = ForwardHidden(inputIds, attentionMask);
        Tensor flatHidden = hidden.reshape(-1, hidden.shape[^1]);
        Tensor flatLabels = labels.to(Device).reshape(-1);
        Tensor positions = flatLabels.ne(Data.TokenizedExample.IgnoreIndex).nonzero().squeeze(1);
        Tensor? trainableHead = (_lmHead?.Weight ?? _model.Embed.Weight) is { requires_grad: true } head ? head : null;
        long chunk = LossChunkTokens > 0 ? LossChunkTokens : ModelMemoryEstimate.ChunkTokens(Config.VocabSize);
        return ChunkedLmHeadLoss.Apply(flatHidden.index_select(0, positions), flatLabels.index_select(0, positions), HeadWeight,
            trainableHead, Storage.ComputeType, chunk, Config.FinalLogitSoftcapping).MoveToOuterDisposeScope();
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
        RequireUnquantized("initialise random weights");
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
                    // Drawn in float32 and rounded once, so every storage type holds the same draw.
                    using Tensor values = torch.randn(tensor.shape, ScalarType.Float32, torch.CPU, generator: gen).mul_(std);
                    tensor.copy_(values);
                }
            }
        }
    }

    /// <summary>Makes the base weights trainable (full fine-tuning, float32 storage only) or frozen (LoRA, the default).</summary>
    public void SetBaseTrainable(bool trainable)
    {
        if (trainable && Storage != WeightStorage.Float32)
        {
            throw new InvalidOperationException(
                $"full fine-tuning needs float32, unquantized weights; this model holds {Storage.WeightType} weights quantized {Storage.Quantization} with {Storage.ComputeType} matmuls");
        }
        foreach (var (_, tensor) in BaseWeights())
        {
            tensor.requires_grad = trainable;
        }
    }

    /// <summary>The parameters an optimiser should update (those with requires_grad).</summary>
    public IEnumerable<Parameter> TrainableParameters() => parameters().Where(p => p.requires_grad);

    /// <summary>Number of values in parameters that train.</summary>
    public long TrainableParameterCount() => TrainableParameters().Sum(p => p.numel());

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _rotary.Dispose();
        }
        base.Dispose(disposing);
    }

    internal IEnumerable<(string Path, Lora.LoraLinear Linear)> AllLinears()
    {
        for (int i = 0; i < _model.Layers.Count; i++)
        {
            foreach (var (name, linear) in _model.Layers[i].Projections())
            {
                yield return ($"model.layers.{i}.{name}", linear);
            }
        }
    }

    /// <summary>The head weight [vocab, hidden] in the compute type (the embedding when tied); the caller disposes it.</summary>
    private Tensor HeadWeight()
    {
        if (_lmHead is not null)
        {
            return _lmHead.ComputeWeight();
        }
        using var noGrad = torch.no_grad();
        return _model.Embed.Weight.to_type(Storage.ComputeType);
    }

    private void RequireUnquantized(string action)
    {
        if (Storage.Quantization != BaseQuantization.None)
        {
            throw new InvalidOperationException($"cannot {action}: the base weights are quantized ({Storage.Quantization}); load it with quantization none");
        }
    }

    private static bool IsLoraName(string name) => name.Contains(".lora_A", StringComparison.Ordinal) || name.Contains(".lora_B", StringComparison.Ordinal);

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
