namespace Federated.Coordinator.Tests;

/// <summary>Tests that run TorchSharp models: one at a time, so they do not compete for the cores.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection
{
    public const string Name = "torch";
}
