using TorchSharp;

namespace Federated.Training.Tests;

/// <summary>TorchSharp tests share one native runtime and global seed, so they never run in parallel.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TorchCollection : ICollectionFixture<TorchThreads>
{
    public const string Name = "TorchSharp";
}

/// <summary>
/// One intra-op thread for the tiny test models: on a shared, oversubscribed CI machine OpenMP's spinning barriers
/// made two-thread steps of a tiny model a hundred times slower; results do not depend on the thread count.
/// </summary>
public sealed class TorchThreads
{
    public TorchThreads()
    {
        torch.set_num_threads(1);
    }
}
