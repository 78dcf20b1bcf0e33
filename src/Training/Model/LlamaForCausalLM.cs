using Federated.Training.Lora;
using Federated.Training.SafeTensors;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>
/// A Llama-family causal language model (transformers' LlamaForCausalLM) in TorchSharp, with optional LoRA adapters.
/// Parameters carry Hugging Face names; the model lives on the device it was built on (it is never moved).
/// </summary>
public sealed class LlamaForCausalLM : nn.Module<Tensor, Tensor>
{
    private const string PeftPrefix = "base_model.model.";
    private readonly LlamaBackbone _model;
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
        _model = new LlamaBackbone(config, Device);
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
        ArgumentNullException.ThrowIfNull(inputIds);
        if (inputIds.dim() != 2)
        {
            throw new ArgumentException($"input ids must be [batch, sequence]; got [{string.Join(", ", inputIds.shape)}]", nameof(inputIds));
        }
        long length = inputIds.shape[1];
        if (Config.SlidingWindow is { } window && length > window)
        {
            // Within the window, sliding-window attention is plain causal attention; beyond it we would be wrong.
            throw new NotSupportedException(
                $"sequence length {length} exceeds the model's sliding_window {window}; sliding-window attention is not implemented, use sequences of at most {window} tokens");
        }
        using var scope = torch.NewDisposeScope();
        var (cos, sin) = _rotary.Tables(length);
        Tensor ids = inputIds.device == Device ? inputIds : inputIds.to(Device);
        Tensor? mask = BuildMask(attentionMask, length);
        Tensor hidden = _model.Forward(ids, cos, sin, mask);
        Tensor logits = _lmHead is not null
            ? _lmHead.forward(hidden)
            : nn.functional.linear(hidden, _model.Embed.Weight);
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

    /// <summary>Initialises base weights like transformers' _init_weights (normal(0, std), norms 1, biases 0) from a seed.</summary>
    public void InitializeRandom(long seed, double std = 0.02)
    {
        using var gen = new Generator((ulong)seed);
        using (torch.no_grad())
        {
            foreach (var (name, tensor) in BaseWeights())
            {
                if (name.EndsWith("norm.weight", StringComparison.Ordinal))
                {
                    tensor.fill_(1.0);
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

    /// <summary>Attaches LoRA adapters to the target projections of every layer; base weights stay frozen.</summary>
    public void AddLora(LoraSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        if (_lora is not null)
        {
            throw new InvalidOperationException("the model already has a LoRA adapter; merge or remove it first");
        }
        foreach (var (path, linear) in TargetLinears(settings.Targets))
        {
            linear.AttachLora(settings, path);
        }
        _lora = settings;
    }

    /// <summary>Removes the adapter without changing the base weights.</summary>
    public void RemoveLora()
    {
        foreach (var (_, linear) in AllLinears())
        {
            linear.RemoveLora();
        }
        _lora = null;
    }

    /// <summary>Adds scaling · B A into each base weight and removes the adapter (PEFT's merge_and_unload).</summary>
    public void MergeLora()
    {
        foreach (var (_, linear) in AllLinears())
        {
            linear.MergeAndRemoveLora();
        }
        _lora = null;
    }

    /// <summary>Turns the LoRA branches off or on without removing them (evaluation "without an adapter").</summary>
    public void SetLoraEnabled(bool enabled)
    {
        foreach (var (_, linear) in AllLinears())
        {
            linear.LoraEnabled = enabled;
        }
    }

    /// <summary>Makes the base weights trainable (full fine-tuning) or frozen (LoRA, the default).</summary>
    public void SetBaseTrainable(bool trainable)
    {
        foreach (var (_, tensor) in BaseWeights())
        {
            tensor.requires_grad = trainable;
        }
    }

    /// <summary>The parameters an optimiser should update (those with requires_grad).</summary>
    public IEnumerable<Parameter> TrainableParameters() => parameters().Where(p => p.requires_grad);

    /// <summary>PEFT names of the adapter tensors that train (lora_B only under FFA-LoRA).</summary>
    public IReadOnlyList<string> TrainableAdapterNames() =>
        AdapterParameters().Where(p => p.Parameter.requires_grad).Select(p => p.Name).OrderBy(n => n, StringComparer.Ordinal).ToList();

    /// <summary>A managed copy of every adapter tensor under its PEFT name.</summary>
    public AdapterTensors GetAdapter()
    {
        RequireLora();
        return new AdapterTensors(AdapterParameters().Select(p => NamedTensor.FromTensor(p.Name, p.Parameter)));
    }

    /// <summary>Overwrites the adapter from named tensors; every adapter tensor must be present with its exact shape.</summary>
    public void SetAdapter(AdapterTensors adapter)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        RequireLora();
        var parameters = AdapterParameters().ToList();
        var expected = parameters.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        foreach (string name in adapter.Names)
        {
            if (!expected.Contains(name))
            {
                throw new InvalidDataException($"adapter tensor '{name}' matches no LoRA module of this model");
            }
        }
        foreach (var (name, parameter) in parameters)
        {
            if (!adapter.Contains(name))
            {
                throw new InvalidDataException($"adapter is missing tensor '{name}'");
            }
            var t = adapter[name];
            if (!t.Shape.SequenceEqual(parameter.shape))
            {
                throw new InvalidDataException(
                    $"adapter tensor '{name}' has shape [{string.Join(", ", t.Shape)}]; the model needs [{string.Join(", ", parameter.shape)}]");
            }
        }
        using (torch.no_grad())
        {
            foreach (var (name, parameter) in parameters)
            {
                using Tensor source = adapter[name].ToTensor();
                parameter.copy_(source);
            }
        }
    }

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

    internal IEnumerable<(string Name, Parameter Parameter)> AdapterParameters()
    {
        foreach (var (path, linear) in AllLinears())
        {
            if (linear.LoraA is { } a && linear.LoraB is { } b)
            {
                yield return ($"{PeftPrefix}{path}.lora_A.weight", a);
                yield return ($"{PeftPrefix}{path}.lora_B.weight", b);
            }
        }
    }

    private IEnumerable<(string Path, Lora.LoraLinear Linear)> TargetLinears(IReadOnlyList<string> targets) =>
        AllLinears().Where(l => targets.Contains(l.Path[(l.Path.LastIndexOf('.') + 1)..]));

    private void RequireLora()
    {
        if (_lora is null)
        {
            throw new InvalidOperationException("the model has no LoRA adapter; call AddLora first");
        }
    }

    private static bool IsLoraName(string name) => name.Contains(".lora_A", StringComparison.Ordinal) || name.Contains(".lora_B", StringComparison.Ordinal);

    private Tensor? BuildMask(Tensor? attentionMask, long length)
    {
        if (attentionMask is null)
        {
            return null;
        }
        Tensor keep = attentionMask.to(Device).to_type(ScalarType.Bool);
        if (keep.all().item<bool>())
        {
            // No padding: the fused causal path is faster than an explicit mask.
            return null;
        }
        Tensor causal = torch.ones([length, length], ScalarType.Bool, Device).tril();
        // Every query may see itself, so a row of padding never becomes all -inf (NaN); its loss is ignored anyway.
        Tensor self = torch.eye(length, length, ScalarType.Bool, Device);
        Tensor keys = keep.unsqueeze(1).unsqueeze(2); // [B, 1, 1, T]
        return causal.logical_and(keys.logical_or(self));
    }
}
