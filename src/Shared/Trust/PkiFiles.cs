using System.Text;

namespace Federated.Trust;

/// <summary>Writes PKI material: private keys are created owner-only (0600) from the first byte, never chmod-ed later.</summary>
public static class PkiFiles
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode Public = OwnerOnly | UnixFileMode.GroupRead | UnixFileMode.OtherRead;

    public static void WritePrivate(string path, ReadOnlySpan<byte> content) => Write(path, content, OwnerOnly);

    public static void WritePrivate(string path, string content) => Write(path, Encoding.ASCII.GetBytes(content), OwnerOnly);

    public static void WritePublic(string path, string content) => Write(path, Encoding.ASCII.GetBytes(content), Public);

    private static void Write(string path, ReadOnlySpan<byte> content, UnixFileMode mode)
    {
        var options = new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            Share = FileShare.None,
        };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = mode;
        }
        using (var stream = new FileStream(path, options))
        {
            stream.Write(content);
            stream.Flush(flushToDisk: true);
        }
        if (!OperatingSystem.IsWindows())
        {
            // The umask may have narrowed the create mode; set it exactly.
            File.SetUnixFileMode(path, mode);
        }
    }
}
