using Federated.Coordinator.Storage;

namespace Federated.Coordinator.Tests.Storage;

public sealed class DurableDirectoryTests
{
    [Fact]
    public void Flush_ExistingDirectory_Succeeds()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("a.tmp"), "x");
        File.Move(dir.File("a.tmp"), dir.File("a"));

        DurableDirectory.Flush(dir.Path);

        Assert.True(File.Exists(dir.File("a")));
    }

    [Fact]
    public void Flush_MissingDirectory_ThrowsIOExceptionNamingIt()
    {
        using var dir = new TempDirectory();
        string missing = dir.File("missing");

        var ex = Assert.Throws<IOException>(() => DurableDirectory.Flush(missing));

        Assert.Contains(missing, ex.Message, StringComparison.Ordinal);
    }
}
