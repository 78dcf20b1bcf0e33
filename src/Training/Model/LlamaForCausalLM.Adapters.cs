using Federated.Training.Lora;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Federated.Training.Model;

// The adapter side of the model: attaching, merging and exchanging LoRA tensors under their PEFT names.
public sealed partial class LlamaForCausalLM
{
    /// <summary>
    /// Attaches LoRA adapters to the target projections of every layer; base weights stay frozen. As PEFT matches
    /// target_modules, names this family does not have are skipped (q_proj on Phi-3, whose attention is one qkv_proj),
    /// but at least one must match; <see cref="Lora"/> then lists only the matched ones, in this family's order.
    /// </summary>
    public void AddLora(LoraSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        if (_lora is not null)
        {
            throw new InvalidOperationException("the model already has a LoRA adapter; merge or remove it first");
        }
        // Without target_modules, the attention projections of this family (PEFT's usual q/k/v/o; qkv/o on Phi-3).
        IReadOnlyList<string> requested = settings.TargetModules ?? Config.AttentionProjectionNames;
        string[] matched = Config.ProjectionNames.Where(requested.Contains).ToArray();
        if (matched.Length == 0)
        {
            throw new ArgumentException(
                $"none of the LoRA target modules {string.Join(", ", requested)} exists in a {Config.ModelType} model; its projections are {string.Join(", ", Config.ProjectionNames)}",
                nameof(settings));
        }
        var effective = settings with { TargetModules = matched };
        foreach (var (path, linear) in TargetLinears(matched))
        {
            linear.AttachLora(effective, path);
        }
        _lora = effective;
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
}
