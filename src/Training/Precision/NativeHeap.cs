using System.Runtime.InteropServices;

namespace Federated.Training.Precision;

/// <summary>
/// libtorch's CPU tensors come from malloc. glibc serves blocks below its mmap threshold from the heap and keeps them
/// there after free, and the threshold grows to 32 MiB as large blocks are freed (mallopt(3), M_MMAP_THRESHOLD), so
/// the activations of a training step (a few MiB each) stay resident long after they die and stack up into the
/// peak. A fixed 1 MiB threshold gives every tensor of that size its own mapping, returned to the OS on free.
/// </summary>
internal static partial class NativeHeap
{
    private const int MmapThreshold = -3; // M_MMAP_THRESHOLD in glibc's malloc.h
    private const int Threshold = 1 << 20;
    private static int s_configured;

    /// <summary>Sets the threshold once per process on Linux with glibc; elsewhere (or with another libc) nothing happens.</summary>
    public static void ReturnLargeBlocksToTheSystem()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref s_configured, 1) == 1)
        {
            return;
        }
        try
        {
            _ = Mallopt(MmapThreshold, Threshold);
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            // musl and other libcs have no mallopt; their allocators decide for themselves.
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int Mallopt(int parameter, int value);
}
