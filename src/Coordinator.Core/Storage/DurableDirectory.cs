using System.Runtime.InteropServices;

namespace Federated.Coordinator.Storage;

/// <summary>
/// Makes a rename durable: on POSIX systems a file's new name survives a power loss only once its directory is
/// fsync'ed too (rename(2) changes the directory, not the file). Windows commits the rename with the file.
/// </summary>
internal static partial class DurableDirectory
{
    private const int ReadOnly = 0;

    /// <summary>fsync(2) on the directory; a failure is an IOException naming the directory.</summary>
    public static void Flush(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (OperatingSystem.IsWindows())
        {
            return;
        }
        int descriptor = Open(directory, ReadOnly);
        if (descriptor < 0)
        {
            throw new IOException($"cannot open directory '{directory}' to flush it (errno {Marshal.GetLastPInvokeError()})");
        }
        try
        {
            if (Fsync(descriptor) != 0)
            {
                throw new IOException($"fsync of directory '{directory}' failed (errno {Marshal.GetLastPInvokeError()})");
            }
        }
        finally
        {
            _ = Close(descriptor);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int descriptor);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int descriptor);
}
