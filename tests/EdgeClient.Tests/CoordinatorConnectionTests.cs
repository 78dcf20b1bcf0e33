using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;

namespace Federated.EdgeClient.Tests;

public sealed class CoordinatorConnectionTests : IDisposable
{
    private static readonly ConnectionOptions s_fast = new()
    {
        InitialBackoff = TimeSpan.FromMilliseconds(5),
        MaximumBackoff = TimeSpan.FromMilliseconds(20),
        MaxRetries = 2,
        CallTimeout = TimeSpan.FromSeconds(5),
        ConnectTimeout = TimeSpan.FromSeconds(2),
    };

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "federated-edge-" + Guid.NewGuid().ToString("N"));
    private readonly EdgeIdentity _identity;

    public CoordinatorConnectionTests()
    {
        Directory.CreateDirectory(_dir);
        using ECDsa caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        using X509Certificate2 ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=edge", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        using X509Certificate2 issued = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3]);
        using X509Certificate2 withKey = issued.CopyWithPrivateKey(key);
        File.WriteAllBytes(Path.Combine(_dir, "edge.pfx"), withKey.Export(X509ContentType.Pkcs12));
        File.WriteAllText(Path.Combine(_dir, "ca.crt"), ca.ExportCertificatePem());
        _identity = EdgeIdentity.Load(Path.Combine(_dir, "edge.pfx"), Path.Combine(_dir, "ca.crt"));
    }

    [Fact]
    public async Task RetryAsync_CoordinatorUnreachable_RetriesThenSurfacesUnavailable()
    {
        using var connection = new CoordinatorConnection(new Uri($"https://127.0.0.1:{ClosedPort()}"), _identity, s_fast);
        int attempts = 0;

        var ex = await Assert.ThrowsAsync<RpcException>(() => connection.RetryAsync(ct =>
        {
            attempts++;
            return connection.Edge.RegisterAsync(new RegisterRequest(), connection.Call(ct)).ResponseAsync;
        }, CancellationToken.None));

        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Equal(1 + s_fast.MaxRetries, attempts);
    }

    [Fact]
    public async Task RetryAsync_TransientThenSuccess_ReturnsResult()
    {
        using var connection = new CoordinatorConnection(new Uri("https://127.0.0.1:1"), _identity, s_fast);
        int attempts = 0;

        int result = await connection.RetryAsync(_ =>
        {
            attempts++;
            return attempts < 3 ? throw new RpcException(new Status(StatusCode.Unavailable, "down")) : Task.FromResult(42);
        }, CancellationToken.None);

        Assert.Equal((42, 3), (result, attempts));
    }

    [Fact]
    public async Task RetryAsync_PermissionDenied_NotRetried()
    {
        using var connection = new CoordinatorConnection(new Uri("https://127.0.0.1:1"), _identity, s_fast);
        int attempts = 0;

        var ex = await Assert.ThrowsAsync<RpcException>(() => connection.RetryAsync<int>(_ =>
        {
            attempts++;
            throw new RpcException(new Status(StatusCode.PermissionDenied, "no"));
        }, CancellationToken.None));

        Assert.Equal((StatusCode.PermissionDenied, 1), (ex.StatusCode, attempts));
    }

    [Fact]
    public void Call_Always_CarriesADeadline()
    {
        using var connection = new CoordinatorConnection(new Uri("https://127.0.0.1:1"), _identity, s_fast);
        DateTime before = DateTime.UtcNow;

        CallOptions options = connection.Call(CancellationToken.None);

        Assert.NotNull(options.Deadline);
        Assert.InRange(options.Deadline!.Value, before.AddSeconds(4), before.AddSeconds(6));
    }

    [Fact]
    public void Constructor_PlainHttpUrl_Refused()
    {
        Assert.Throws<ArgumentException>(() => new CoordinatorConnection(new Uri("http://127.0.0.1:1"), _identity));
    }

    public void Dispose()
    {
        _identity.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
