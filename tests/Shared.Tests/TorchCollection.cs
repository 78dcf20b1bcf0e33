namespace Federated.Shared.Tests;

/// <summary>TorchSharp tests share one native runtime, so they never run in parallel.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection
{
    public const string Name = "TorchSharp";
}
