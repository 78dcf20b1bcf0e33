using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Trainer;

/// <summary>Chooses the torch device from a user's auto|cpu|cuda choice.</summary>
public static class TrainingDevice
{
    public static readonly IReadOnlyList<string> Choices = ["auto", "cpu", "cuda"];

    /// <summary>auto picks CUDA whenever torch.cuda.is_available(), else the CPU; cuda without a GPU is an error.</summary>
    public static Device Resolve(string choice)
    {
        ArgumentNullException.ThrowIfNull(choice);
        switch (choice.ToLowerInvariant())
        {
            case "auto":
                return torch.cuda.is_available() ? torch.CUDA : torch.CPU;
            case "cpu":
                return torch.CPU;
            case "cuda":
                if (!torch.cuda.is_available())
                {
                    throw new ArgumentException("device 'cuda' was asked for but torch.cuda.is_available() is false on this machine", nameof(choice));
                }
                return torch.CUDA;
            default:
                throw new ArgumentOutOfRangeException(nameof(choice), choice, "device must be auto, cpu or cuda");
        }
    }
}
