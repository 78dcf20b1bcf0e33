using System.Security.Cryptography;
using Federated.Coordinator.Storage;

namespace Federated.Coordinator.Tests.Storage;

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class AtRestCipherTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("at-rest-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ReadFile_WithTheKey_RoundTripsAndFileHoldsNoPlaintext()
    {
        string keyPath = Path.Combine(_dir, "at-rest.key");
        AtRestCipher.CreateKeyFile(keyPath);
        byte[] checkpoint = RandomNumberGenerator.GetBytes(4096);
        string path = Path.Combine(_dir, "round-3.bin");

        using (AtRestCipher cipher = AtRestCipher.FromKeyFile(keyPath))
        {
            cipher.WriteFile(path, checkpoint, "run/1/round/3/adapter");
        }
        byte[] stored = File.ReadAllBytes(path);
        using AtRestCipher reopened = AtRestCipher.FromKeyFile(keyPath);

        Assert.Equal(checkpoint, reopened.ReadFile(path, "run/1/round/3/adapter"));
        Assert.Equal(-1, stored.AsSpan().IndexOf(checkpoint.AsSpan(0, 32)));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keyPath));
    }

    [Fact]
    public void Decrypt_WithoutTheKey_Refuses()
    {
        using var cipher = new AtRestCipher(RandomNumberGenerator.GetBytes(32));
        using var other = new AtRestCipher(RandomNumberGenerator.GetBytes(32));
        byte[] blob = cipher.Encrypt("secret adapter"u8, "a");

        var ex = Assert.Throws<AtRestDecryptionException>(() => other.Decrypt(blob, "a"));

        Assert.Contains("another key", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EncryptDecrypt_ManyThreadsOnOneCipher_EveryBlobRoundTrips()
    {
        // Concurrent downloads share the host's one cipher; its native context must not be used by two threads at once.
        using var cipher = new AtRestCipher(RandomNumberGenerator.GetBytes(32));
        byte[][] plaintexts = [.. Enumerable.Range(0, 16).Select(i => RandomNumberGenerator.GetBytes(50_000 + i))];
        byte[][] blobs = [.. plaintexts.Select((p, i) => cipher.Encrypt(p, "adapter/" + i))];

        Parallel.For(0, 400, new ParallelOptions { MaxDegreeOfParallelism = 8 }, n =>
        {
            int i = n % plaintexts.Length;
            Assert.Equal(plaintexts[i], cipher.Decrypt(blobs[i], "adapter/" + i));
            Assert.Equal(plaintexts[i], cipher.Decrypt(cipher.Encrypt(plaintexts[i], "x"), "x"));
        });
    }

    [Fact]
    public void Decrypt_AnyOneBitFlip_Refuses()
    {
        using var cipher = new AtRestCipher(RandomNumberGenerator.GetBytes(32));
        byte[] blob = cipher.Encrypt(RandomNumberGenerator.GetBytes(100), "run/1/round/1/adapter");

        for (int i = 0; i < blob.Length * 8; i++)
        {
            byte[] tampered = (byte[])blob.Clone();
            tampered[i / 8] ^= (byte)(1 << (i % 8));
            Assert.Throws<AtRestDecryptionException>(() => cipher.Decrypt(tampered, "run/1/round/1/adapter"));
        }
    }

    [Fact]
    public void Decrypt_UnderAnotherName_Refuses()
    {
        using var cipher = new AtRestCipher(RandomNumberGenerator.GetBytes(32));
        byte[] blob = cipher.Encrypt("round three"u8, "run/1/round/3/adapter");

        Assert.Throws<AtRestDecryptionException>(() => cipher.Decrypt(blob, "run/1/round/4/adapter"));
    }

    [Fact]
    public void FromKeyFile_ReadableByOthers_Refuses()
    {
        string keyPath = Path.Combine(_dir, "loose.key");
        File.WriteAllText(keyPath, Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)));
        File.SetUnixFileMode(keyPath, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);

        Assert.Throws<UnauthorizedAccessException>(() => AtRestCipher.FromKeyFile(keyPath));
    }

    [Theory]
    [InlineData(16)]
    [InlineData(31)]
    [InlineData(33)]
    public void Constructor_WrongKeyLength_Throws(int length)
    {
        Assert.Throws<ArgumentException>(() => new AtRestCipher(new byte[length]));
    }
}
