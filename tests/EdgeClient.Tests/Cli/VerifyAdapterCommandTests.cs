using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Federated.Training.Provenance;

namespace Federated.EdgeClient.Tests.Cli;

public sealed class VerifyAdapterCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("verify-adapter-").FullName;
    private readonly string _adapter;
    private readonly string _caPath;

    public VerifyAdapterCommandTests()
    {
        _adapter = Path.Combine(_dir, "adapter");
        Directory.CreateDirectory(_adapter);
        File.WriteAllText(Path.Combine(_adapter, "adapter_config.json"), """{"peft_type":"LORA"}""");
        File.WriteAllBytes(Path.Combine(_adapter, "adapter_model.safetensors"), new byte[64]);

        DateTimeOffset now = DateTimeOffset.UtcNow;
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Federation CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        using X509Certificate2 ca = caRequest.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(2));
        _caPath = Path.Combine(_dir, "ca.crt");
        File.WriteAllText(_caPath, ca.ExportCertificatePem());

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=coordinator-signing", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.3")], false));
        using X509Certificate2 issued = request.Create(ca, now.AddMinutes(-5), now.AddDays(1), [1, 2, 3, 4]);
        using X509Certificate2 signer = issued.CopyWithPrivateKey(key);
        AdapterSignature.Sign(_adapter, signer);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task VerifyAdapter_SignedFolder_ExitsZeroWithSigner()
    {
        (int code, string stdout, _) = await EdgeClientProcess.RunAsync("verify-adapter", _adapter, "--ca", _caPath, "--json");

        Assert.Equal(0, code);
        using JsonDocument json = JsonDocument.Parse(stdout);
        Assert.True(json.RootElement.GetProperty("valid").GetBoolean());
        Assert.Equal("CN=coordinator-signing", json.RootElement.GetProperty("signer").GetString());
    }

    [Fact]
    public async Task VerifyAdapter_OneByteChanged_ExitsOneNamingTheFile()
    {
        string weights = Path.Combine(_adapter, "adapter_model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        bytes[10] = 1;
        File.WriteAllBytes(weights, bytes);

        (int code, _, string stderr) = await EdgeClientProcess.RunAsync("verify-adapter", _adapter, "--ca", _caPath);

        Assert.Equal(1, code);
        Assert.Contains("REFUSED", stderr, StringComparison.Ordinal);
        Assert.Contains("adapter_model.safetensors changed", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task VerifyAdapter_MissingCa_ExitsTwo()
    {
        (int code, _, string stderr) = await EdgeClientProcess.RunAsync("verify-adapter", _adapter, "--ca", Path.Combine(_dir, "none.crt"));

        Assert.Equal(2, code);
        Assert.Contains("--ca", stderr, StringComparison.Ordinal);
    }
}
