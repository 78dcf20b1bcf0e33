using System.Security.Cryptography;
using System.Security.Cryptography.Pkcs;
using System.Security.Cryptography.X509Certificates;
using Federated.Training.Provenance;

namespace Federated.Training.Tests.Provenance;

public sealed class AdapterSignatureTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("adapter-sig-").FullName;
    private readonly X509Certificate2 _ca;
    private readonly X509Certificate2 _signer;

    public AdapterSignatureTests()
    {
        (_ca, ECDsa caKey) = CreateCa("CN=Test Federation CA");
        using (caKey)
        {
            _signer = Issue(_ca, caKey, "CN=coordinator-signing", codeSigning: true);
        }
        File.WriteAllText(Path.Combine(_dir, "adapter_config.json"), """{"peft_type":"LORA","r":4}""");
        File.WriteAllBytes(Path.Combine(_dir, "adapter_model.safetensors"), Enumerable.Range(0, 256).Select(i => (byte)i).ToArray());
        File.WriteAllText(Path.Combine(_dir, "provenance.json"), """{"epsilon":1.5}""");
    }

    public void Dispose()
    {
        _ca.Dispose();
        _signer.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    [Fact]
    public void Verify_SignedFolder_ReturnsSigner()
    {
        AdapterSignature.Sign(_dir, _signer);

        using X509Certificate2 signer = AdapterSignature.Verify(_dir, _ca);

        Assert.Equal(_signer.Thumbprint, signer.Thumbprint);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(100)]
    [InlineData(255)]
    public void Verify_OneByteChangedInWeights_RefusesNamingTheFile(int offset)
    {
        AdapterSignature.Sign(_dir, _signer);
        string weights = Path.Combine(_dir, "adapter_model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        bytes[offset] ^= 0x01;
        File.WriteAllBytes(weights, bytes);

        var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(_dir, _ca));

        Assert.Contains("adapter_model.safetensors changed", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_FileAddedOrRemoved_Refuses()
    {
        AdapterSignature.Sign(_dir, _signer);
        File.WriteAllText(Path.Combine(_dir, "extra.bin"), "x");
        Assert.Contains("extra.bin was added", Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(_dir, _ca)).Message, StringComparison.Ordinal);

        File.Delete(Path.Combine(_dir, "extra.bin"));
        File.Delete(Path.Combine(_dir, "provenance.json"));
        Assert.Contains("provenance.json is missing", Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(_dir, _ca)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_Unsigned_Refuses()
    {
        var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(_dir, _ca));

        Assert.Contains("unsigned", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Verify_OneBitFlipsOfTheSignatureFile_RefusedUnlessNothingVerifiedChanged()
    {
        AdapterSignature.Sign(_dir, _signer);
        string path = Path.Combine(_dir, AdapterSignature.SignatureFileName);
        byte[] original = File.ReadAllBytes(path);
        string originalMeaning = VerifiedMeaning(original);
        int refused = 0;
        for (int i = 0; i < original.Length; i += 3)
        {
            byte[] tampered = (byte[])original.Clone();
            tampered[i] ^= (byte)(1 << (i % 8));
            File.WriteAllBytes(path, tampered);
            try
            {
                AdapterSignature.Verify(_dir, _ca).Dispose();
            }
            catch (Exception)
            {
                refused++;
                continue;
            }
            // Accepted: only fields that verification ignores may have changed (the DER version numbers of
            // SignedData and SignerInfo, the unsigned digestAlgorithms hint); content, signed attributes,
            // certificate and signature value must be exactly the original ones.
            Assert.Equal(originalMeaning, VerifiedMeaning(tampered));
        }
        Assert.True(refused > original.Length / 3 - 10, $"only {refused} flips refused");
    }

    private static string VerifiedMeaning(byte[] encoded)
    {
        var cms = new SignedCms();
        cms.Decode(encoded);
        SignerInfo signer = cms.SignerInfos[0];
        return string.Join("|",
            Convert.ToHexString(cms.ContentInfo.Content),
            cms.ContentInfo.ContentType.Value,
            signer.DigestAlgorithm.Value,
            Convert.ToHexString(signer.Certificate!.RawData),
            Convert.ToHexString(signer.GetSignature()),
            string.Join(",", signer.SignedAttributes.Cast<CryptographicAttributeObject>()
                .SelectMany(a => a.Values.Cast<AsnEncodedData>().Select(v => a.Oid.Value + "=" + Convert.ToHexString(v.RawData)))));
    }

    [Fact]
    public void Verify_SignerFromAnotherCa_Refuses()
    {
        (X509Certificate2 otherCa, ECDsa otherKey) = CreateCa("CN=Other CA");
        using (otherCa)
        using (otherKey)
        using (X509Certificate2 stranger = Issue(otherCa, otherKey, "CN=stranger", codeSigning: true))
        {
            AdapterSignature.Sign(_dir, stranger);

            var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(_dir, _ca));

            Assert.Contains("does not chain to the federation CA", ex.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Verify_SignerWithoutCodeSigningUsage_Refuses()
    {
        (X509Certificate2 ca, ECDsa caKey) = CreateCa("CN=Test Federation CA 2");
        using (ca)
        using (caKey)
        using (X509Certificate2 server = Issue(ca, caKey, "CN=server", codeSigning: false))
        {
            AdapterSignature.Sign(_dir, server);

            var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.Verify(_dir, ca));

            Assert.Contains("code-signing", ex.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void VerifyFile_SignedBlob_ReturnsSignerAndEqualsTheFolderSignature()
    {
        byte[] blob = File.ReadAllBytes(Path.Combine(_dir, "adapter_model.safetensors"));
        byte[] signature = AdapterSignature.SignFile(blob, "adapter_model.safetensors", _signer);

        using X509Certificate2 signer = AdapterSignature.VerifyFile(blob, "adapter_model.safetensors", signature, _ca);

        Assert.Equal(_signer.Thumbprint, signer.Thumbprint);
        // The blob's signature is the adapter.p7s of a folder holding only that file.
        string single = Directory.CreateTempSubdirectory("adapter-sig-single-").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(single, "adapter_model.safetensors"), blob);
            File.WriteAllBytes(Path.Combine(single, AdapterSignature.SignatureFileName), signature);
            AdapterSignature.Verify(single, _ca).Dispose();
        }
        finally
        {
            Directory.Delete(single, recursive: true);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(128)]
    [InlineData(255)]
    public void VerifyFile_OneByteChanged_Refuses(int offset)
    {
        byte[] blob = File.ReadAllBytes(Path.Combine(_dir, "adapter_model.safetensors"));
        byte[] signature = AdapterSignature.SignFile(blob, "adapter_model.safetensors", _signer);
        blob[offset] ^= 0x01;

        var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.VerifyFile(blob, "adapter_model.safetensors", signature, _ca));

        Assert.Contains("adapter_model.safetensors changed after signing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void VerifyFile_NoSignature_RefusesAsUnsigned()
    {
        byte[] blob = [1, 2, 3];

        var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.VerifyFile(blob, "adapter_model.safetensors", [], _ca));

        Assert.Contains("unsigned", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void VerifyFile_SignedUnderAnotherFileName_Refuses()
    {
        byte[] blob = [1, 2, 3];
        byte[] signature = AdapterSignature.SignFile(blob, "provenance.json", _signer);

        Assert.Throws<AdapterSignatureException>(() => AdapterSignature.VerifyFile(blob, "adapter_model.safetensors", signature, _ca));
    }

    [Fact]
    public void VerifyFile_SignerFromAnotherCa_Refuses()
    {
        (X509Certificate2 otherCa, ECDsa otherKey) = CreateCa("CN=Other CA");
        using (otherCa)
        using (otherKey)
        using (X509Certificate2 stranger = Issue(otherCa, otherKey, "CN=stranger", codeSigning: true))
        {
            byte[] blob = [1, 2, 3];
            byte[] signature = AdapterSignature.SignFile(blob, "adapter_model.safetensors", stranger);

            var ex = Assert.Throws<AdapterSignatureException>(() => AdapterSignature.VerifyFile(blob, "adapter_model.safetensors", signature, _ca));

            Assert.Contains("does not chain to the federation CA", ex.Message, StringComparison.Ordinal);
        }
    }

    private static (X509Certificate2 Ca, ECDsa Key) CreateCa(string subject)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        X509Certificate2 ca = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(30));
        return (ca, key);
    }

    private static X509Certificate2 Issue(X509Certificate2 ca, ECDsa caKey, string subject, bool codeSigning)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(subject, key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(codeSigning ? "1.3.6.1.5.5.7.3.3" : "1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        using X509Certificate2 cert = request.Create(ca.SubjectName, X509SignatureGenerator.CreateForECDsa(caKey),
            DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(7), serial);
        return cert.CopyWithPrivateKey(key);
    }
}
