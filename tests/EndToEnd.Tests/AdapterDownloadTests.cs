using System.Security.Cryptography;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

public sealed class AdapterDownloadTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Download_MultiChunkAdapter_ArrivesIntactWithVerifiedSignature()
    {
        byte[] adapter = RandomNumberGenerator.GetBytes((5 << 19) + 17); // 2.5 MiB + 17: three chunks, the last partial
        string sha256 = coordinator.Host.Adapters.Put(adapter, "adapter-run", 0);
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);

        byte[] downloaded = await AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)adapter.Length }, CancellationToken.None);

        Assert.Equal(adapter, downloaded);
        Assert.Contains(coordinator.Host.State.ReadAudit(1, 10_000).Entries, e => e.CanonicalJson.Contains(sha256, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Download_AdapterEditedOnDisk_RefusedByClient()
    {
        byte[] adapter = RandomNumberGenerator.GetBytes(4096);
        string sha256 = coordinator.Host.Adapters.Put(adapter, "tamper-run", 0);
        string file = Directory.GetFiles(coordinator.Root, sha256 + ".adapter", SearchOption.AllDirectories).Single();
        byte[] onDisk = File.ReadAllBytes(file);
        onDisk[100] ^= 1;
        File.WriteAllBytes(file, onDisk);
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest(), CancellationToken.None);

        var ex = await Assert.ThrowsAsync<InvalidDataException>(() =>
            AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)adapter.Length }, CancellationToken.None));

        Assert.Contains("hashes to", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Download_UnknownOrMalformedHash_NotFoundOrInvalidArgument()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("carol"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest(), CancellationToken.None);

        var unknown = await Assert.ThrowsAsync<RpcException>(() =>
            AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = new string('a', 64), SizeBytes = 10 }, CancellationToken.None));
        var malformed = await Assert.ThrowsAsync<RpcException>(() =>
            AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = "../../etc/passwd", SizeBytes = 10 }, CancellationToken.None));

        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, malformed.StatusCode);
    }
}
