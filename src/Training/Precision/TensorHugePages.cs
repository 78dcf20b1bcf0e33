using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Federated.Training.Precision;

/// <summary>
/// How the process's native heap serves libtorch's CPU tensors. Every tensor of a few MiB or more is a fresh mapping
/// whose pages fault in on first touch; with 4 KiB pages that costs more than the arithmetic on them on a virtual
/// machine (a 67 MB copy took 0.22 CPU-s on the build machine, 0.014 s with 2 MiB pages). libtorch asks the kernel
/// for transparent huge pages on allocations of 2 MiB and more when THP_MEM_ALLOC_ENABLE=1 (c10 alloc_cpu), a
/// variable it reads once, at its first allocation.
/// </summary>
internal static partial class TensorHugePages
{
    private const string HugePagesVariable = "THP_MEM_ALLOC_ENABLE";

    /// <summary>Sets THP_MEM_ALLOC_ENABLE=1 in the native environment unless the user set it, before any tensor exists.</summary>
    /// <remarks>Environment.SetEnvironmentVariable changes only .NET's copy of the environment, so libc's setenv is called.</remarks>
#pragma warning disable CA2255 // A module initializer is the one place guaranteed to run before this library's first tensor.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void UseHugePagesForTensors()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        try
        {
            _ = SetEnv(HugePagesVariable, "1", overwrite: 0);
        }
        catch (Exception e) when (e is EntryPointNotFoundException or DllNotFoundException)
        {
            // Without libc's setenv libtorch keeps 4 KiB pages: slower, never wrong.
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
