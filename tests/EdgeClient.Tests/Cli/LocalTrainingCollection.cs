namespace Federated.EdgeClient.Tests.Cli;

/// <summary>Tests that write TorchSharp models or run local training share the CPU and run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class LocalTrainingCollection
{
    public const string Name = "LocalTraining";
}
