using Federated.Training.Lora;
using Federated.Training.SafeTensors;
using static TorchSharp.torch;

namespace Federated.Training.Model;

/// <summary>Checks a checkpoint against its config.json and the model built from it, then streams the weights in.</summary>
internal static class CheckpointLoading
{
    /// <summary>The float type every weight is stored in; mixed types, or one other than config.json's torch_dtype, are errors naming the tensor.</summary>
    public static SafeTensorDType FloatType(LlamaConfig config, SafeTensorsCheckpoint checkpoint)
    {
        SafeTensorDType? declared = null;
        if (config.DeclaresTorchDtype)
        {
            try
            {
                declared = SafeTensorDTypes.FromTorchDtypeName(config.TorchDtype);
            }
            catch (ArgumentOutOfRangeException)
            {
                throw new InvalidDataException($"config.json torch_dtype '{config.TorchDtype}' is not float32, bfloat16 or float16");
            }
        }
        SafeTensorInfo? first = null;
        foreach (string name in checkpoint.Names.Order(StringComparer.Ordinal))
        {
            SafeTensorInfo info = checkpoint.Info(name);
            if (!SafeTensorDTypes.IsFloatingPoint(info.DType))
            {
                continue;
            }
            if (declared is { } type && info.DType != type)
            {
                throw new InvalidDataException(
                    $"tensor '{name}' in '{checkpoint.FileOf(name)}' is {info.DType} but config.json torch_dtype is {config.TorchDtype}");
            }
            if (first is not null && info.DType != first.DType)
            {
                throw new InvalidDataException(
                    $"tensor '{name}' in '{checkpoint.FileOf(name)}' is {info.DType} but '{first.Name}' is {first.DType}; a checkpoint stores its weights in one type");
            }
            first ??= info;
        }
        SafeTensorDType found = declared ?? first?.DType ?? SafeTensorDType.F32;
        if (found is not (SafeTensorDType.F32 or SafeTensorDType.BF16 or SafeTensorDType.F16))
        {
            throw new InvalidDataException($"checkpoint weights are {found}; supported are F32, BF16 and F16");
        }
        return found;
    }

    /// <summary>Checks that names and shapes match the model exactly (before reading anything), then reads each weight in slices.</summary>
    public static void Load(IReadOnlyList<WeightSlot> slots, SafeTensorsCheckpoint checkpoint, LlamaConfig config)
    {
        var expected = new HashSet<string>(StringComparer.Ordinal);
        foreach (var slot in slots)
        {
            expected.Add(slot.Name);
            if (!checkpoint.Contains(slot.Name))
            {
                throw new InvalidDataException($"checkpoint is missing tensor '{slot.Name}' (expected shape [{string.Join(", ", slot.Shape)}])");
            }
            SafeTensorInfo info = checkpoint.Info(slot.Name);
            if (!info.Shape.SequenceEqual(slot.Shape))
            {
                throw new InvalidDataException(
                    $"checkpoint tensor '{slot.Name}' in '{checkpoint.FileOf(slot.Name)}' has shape [{string.Join(", ", info.Shape)}]; the config needs [{string.Join(", ", slot.Shape)}]");
            }
            if (!SafeTensorDTypes.IsFloatingPoint(info.DType))
            {
                throw new InvalidDataException($"checkpoint tensor '{slot.Name}' in '{checkpoint.FileOf(slot.Name)}' is {info.DType}; weights must be a float type");
            }
        }
        foreach (string name in checkpoint.Names.Order(StringComparer.Ordinal))
        {
            if (!expected.Contains(name) && !Ignorable(name, config))
            {
                throw new InvalidDataException(
                    $"checkpoint tensor '{name}' in '{checkpoint.FileOf(name)}' matches nothing in the {config.NumHiddenLayers}-layer {config.ModelType} model config.json describes");
            }
        }
        using var noGrad = TorchSharp.torch.no_grad();
        foreach (var slot in slots)
        {
            slot.Load(checkpoint);
        }
    }

    // Older Llama exports carry their rotary tables; tied models may still carry a copy of the head, which is the embedding.
    private static bool Ignorable(string name, LlamaConfig config) =>
        name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) || (config.TieWordEmbeddings && name == "lm_head.weight");
}

/// <summary>One weight the model expects by Hugging Face name, and how to fill it from a checkpoint.</summary>
internal sealed record WeightSlot(string Name, long[] Shape, Action<SafeTensorsCheckpoint> Load)
{
    /// <summary>A dense parameter: read in slices straight into its storage type.</summary>
    public static WeightSlot Dense(string name, Tensor parameter) =>
        new(name, parameter.shape, c => c.ReadInto(name, parameter));

    /// <summary>A quantized projection: read one weight as float32, quantize it on the model's device, drop the float copy.</summary>
    public static WeightSlot Quantized(string name, LoraLinear linear, Device device) =>
        new(name, [linear.OutFeatures, linear.InFeatures], c =>
        {
            using Tensor source = c.Read(name, ScalarType.Float32, device);
            linear.LoadQuantized(source);
        });
}
