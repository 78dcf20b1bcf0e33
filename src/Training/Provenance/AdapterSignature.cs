using System.Security.Cryptography;
using System.Security.Cryptography.Pkcs;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace Federated.Training.Provenance;

/// <summary>An adapter folder failed verification: unsigned, changed, or signed by someone outside the federation.</summary>
public sealed class AdapterSignatureException(string message) : Exception(message);

/// <summary>
/// Signs and verifies an adapter folder (PEFT files, provenance) with CMS SignedData, so an edge client loads only
/// adapters that the federation's coordinator produced, byte for byte.
/// </summary>
/// <remarks>
/// The signed content is a manifest in sha256sum format ("hex  relative/path\n" per file, sorted by ordinal path),
/// embedded in <see cref="SignatureFileName"/>. Verification recomputes it, so a changed, added or removed file is
/// named in the error. The signer's certificate must be issued by the federation root itself (custom root trust, never
/// the system store, no intermediate) and carry the code-signing extended key usage.
/// </remarks>
public static class AdapterSignature
{
    /// <summary>The CMS SignedData file written into the adapter folder (DER, PKCS #7).</summary>
    public const string SignatureFileName = "adapter.p7s";

    private const string CodeSigningOid = "1.3.6.1.5.5.7.3.3";
    private const string IdData = "1.2.840.113549.1.7.1";
    private const string Sha256Oid = "2.16.840.1.101.3.4.2.1";
    private const long MaxSignatureBytes = 1 << 20;

    /// <summary>Signs every file under <paramref name="directory"/> and writes <see cref="SignatureFileName"/>.</summary>
    public static void Sign(string directory, X509Certificate2 signer, IEnumerable<X509Certificate2>? chain = null)
    {
        ArgumentNullException.ThrowIfNull(signer);
        byte[] signature = SignManifest(BuildManifest(directory), signer, chain);
        string path = Path.Combine(directory, SignatureFileName);
        string temp = path + ".tmp";
        File.WriteAllBytes(temp, signature);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>
    /// Signs one adapter file held in memory (the coordinator's global adapter blob): the CMS SignedData is exactly
    /// the <see cref="SignatureFileName"/> that <see cref="Sign"/> writes for a folder holding only that file.
    /// </summary>
    public static byte[] SignFile(ReadOnlySpan<byte> content, string fileName, X509Certificate2 signer, IEnumerable<X509Certificate2>? chain = null)
    {
        ArgumentNullException.ThrowIfNull(signer);
        return SignManifest(FileManifest(content, fileName), signer, chain);
    }

    /// <summary>Verifies the folder against the federation CA; returns the signer's certificate.</summary>
    /// <exception cref="AdapterSignatureException">With one line naming what is wrong.</exception>
    public static X509Certificate2 Verify(string directory, X509Certificate2 federationCa, DateTimeOffset? at = null)
    {
        ArgumentNullException.ThrowIfNull(federationCa);
        if (!Directory.Exists(directory))
        {
            throw new AdapterSignatureException($"{directory}: no such adapter folder");
        }
        string path = Path.Combine(directory, SignatureFileName);
        if (!File.Exists(path))
        {
            throw new AdapterSignatureException($"{directory}: unsigned adapter ({SignatureFileName} is missing)");
        }
        if (new FileInfo(path).Length > MaxSignatureBytes)
        {
            throw new AdapterSignatureException($"{path}: signature file is larger than {MaxSignatureBytes} bytes");
        }
        (X509Certificate2 signer, byte[] signedManifest) = VerifySignedData(File.ReadAllBytes(path), federationCa, at, path);
        byte[] expected = BuildManifest(directory);
        if (!CryptographicOperations.FixedTimeEquals(expected, signedManifest))
        {
            signer.Dispose();
            throw new AdapterSignatureException($"{directory}: {DescribeDifference(signedManifest, expected)}");
        }
        return signer;
    }

    /// <summary>
    /// Verifies the CMS signature of one adapter file held in memory against the federation CA (the check an edge
    /// client makes before it loads a downloaded global adapter); returns the signer's certificate.
    /// </summary>
    /// <exception cref="AdapterSignatureException">Unsigned, changed, or not signed by a federation code-signing certificate.</exception>
    public static X509Certificate2 VerifyFile(ReadOnlySpan<byte> content, string fileName, ReadOnlySpan<byte> signature, X509Certificate2 federationCa, DateTimeOffset? at = null)
    {
        ArgumentNullException.ThrowIfNull(federationCa);
        if (signature.IsEmpty)
        {
            throw new AdapterSignatureException($"{fileName}: unsigned adapter (no CMS signature)");
        }
        if (signature.Length > MaxSignatureBytes)
        {
            throw new AdapterSignatureException($"{fileName}: signature is larger than {MaxSignatureBytes} bytes");
        }
        (X509Certificate2 signer, byte[] signedManifest) = VerifySignedData(signature.ToArray(), federationCa, at, fileName);
        byte[] expected = FileManifest(content, fileName);
        if (!CryptographicOperations.FixedTimeEquals(expected, signedManifest))
        {
            signer.Dispose();
            throw new AdapterSignatureException($"{fileName}: {DescribeDifference(signedManifest, expected)}");
        }
        return signer;
    }

    private static byte[] SignManifest(byte[] manifest, X509Certificate2 signer, IEnumerable<X509Certificate2>? chain)
    {
        if (!signer.HasPrivateKey)
        {
            throw new ArgumentException($"signing certificate {signer.Subject} has no private key", nameof(signer));
        }
        var cms = new SignedCms(new ContentInfo(manifest), detached: false);
        var cmsSigner = new CmsSigner(SubjectIdentifierType.IssuerAndSerialNumber, signer)
        {
            DigestAlgorithm = new Oid(Sha256Oid),
            IncludeOption = X509IncludeOption.EndCertOnly,
        };
        cmsSigner.SignedAttributes.Add(new Pkcs9SigningTime(DateTime.UtcNow));
        foreach (X509Certificate2 extra in chain ?? [])
        {
            cmsSigner.Certificates.Add(extra);
        }
        cms.ComputeSignature(cmsSigner);
        return cms.Encode();
    }

    /// <summary>Decodes and checks a SignedData: one signer, valid signature, SHA-256 over id-data, a code-signing certificate chaining to the CA.</summary>
    private static (X509Certificate2 Signer, byte[] Content) VerifySignedData(byte[] encoded, X509Certificate2 federationCa, DateTimeOffset? at, string label)
    {
        var cms = new SignedCms();
        try
        {
            cms.Decode(encoded);
            if (cms.SignerInfos.Count != 1)
            {
                throw new AdapterSignatureException($"{label}: expected exactly one signer, found {cms.SignerInfos.Count}");
            }
            cms.CheckSignature(verifySignatureOnly: true);
            if (cms.ContentInfo.ContentType.Value != IdData || cms.SignerInfos[0].DigestAlgorithm.Value != Sha256Oid)
            {
                throw new AdapterSignatureException($"{label}: unexpected content type or digest algorithm");
            }
        }
        catch (CryptographicException ex)
        {
            throw new AdapterSignatureException($"{label}: invalid signature ({ex.Message.TrimEnd('.')})");
        }

        X509Certificate2 signer = cms.SignerInfos[0].Certificate
            ?? throw new AdapterSignatureException($"{label}: the signer's certificate is not included");
        try
        {
            CheckChain(signer, federationCa, cms.Certificates, at ?? DateTimeOffset.UtcNow, label);
        }
        catch
        {
            signer.Dispose();
            throw;
        }
        return (signer, cms.ContentInfo.Content);
    }

    /// <summary>The manifest of a folder that holds only <paramref name="fileName"/> with <paramref name="content"/>.</summary>
    private static byte[] FileManifest(ReadOnlySpan<byte> content, string fileName)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        if (fileName.Contains('\n', StringComparison.Ordinal) || fileName.Contains("  ", StringComparison.Ordinal) || Path.IsPathRooted(fileName))
        {
            throw new ArgumentException($"'{fileName}' cannot name a file in an adapter manifest", nameof(fileName));
        }
        return Encoding.UTF8.GetBytes(Convert.ToHexStringLower(SHA256.HashData(content)) + "  " + fileName + "\n");
    }

    /// <summary>The sha256sum-style manifest of every file in the folder except the signature itself.</summary>
    public static byte[] BuildManifest(string directory)
    {
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"{directory}: no such adapter folder");
        }
        var builder = new StringBuilder();
        var files = Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(directory, f).Replace('\\', '/'))
            .Where(f => f != SignatureFileName && !f.EndsWith(".tmp", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        foreach (string relative in files)
        {
            using FileStream stream = File.OpenRead(Path.Combine(directory, relative));
            string hash = Convert.ToHexStringLower(SHA256.HashData(stream));
            builder.Append(hash).Append("  ").Append(relative).Append('\n');
        }
        return Encoding.UTF8.GetBytes(builder.ToString());
    }

    private static void CheckChain(X509Certificate2 signer, X509Certificate2 ca, X509Certificate2Collection extra, DateTimeOffset at, string path)
    {
        bool codeSigning = signer.Extensions.OfType<X509EnhancedKeyUsageExtension>()
            .Any(e => e.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == CodeSigningOid));
        if (!codeSigning)
        {
            throw new AdapterSignatureException($"{path}: signer {signer.Subject} lacks the code-signing extended key usage");
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationTime = at.UtcDateTime;
        chain.ChainPolicy.VerificationTimeIgnored = false;
        foreach (X509Certificate2 cert in extra)
        {
            if (!cert.RawDataMemory.Span.SequenceEqual(signer.RawDataMemory.Span))
            {
                chain.ChainPolicy.ExtraStore.Add(cert);
            }
        }
        if (!chain.Build(signer))
        {
            string reasons = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
            throw new AdapterSignatureException($"{path}: signer {signer.Subject} does not chain to the federation CA ({reasons})");
        }
        X509Certificate2 root = chain.ChainElements[^1].Certificate;
        if (!root.RawDataMemory.Span.SequenceEqual(ca.RawDataMemory.Span))
        {
            throw new AdapterSignatureException($"{path}: signer {signer.Subject} chains to {root.Subject}, not the federation CA");
        }
        // Only the offline root signs adapter signers: a chain through any intermediate (the coordinator's renewal CA,
        // which a compromised coordinator holds, embedded in the CMS) is refused.
        if (chain.ChainElements.Count != 2)
        {
            throw new AdapterSignatureException(
                $"{path}: signer {signer.Subject} is not issued by the federation root directly (chain of {chain.ChainElements.Count}); only the root certifies adapter signers");
        }
    }

    private static string DescribeDifference(byte[] signedManifest, byte[] actualManifest)
    {
        static Dictionary<string, string> Parse(byte[] manifest) => Encoding.UTF8.GetString(manifest)
            .Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split("  ", 2))
            .Where(parts => parts.Length == 2)
            .ToDictionary(parts => parts[1], parts => parts[0], StringComparer.Ordinal);
        Dictionary<string, string> signed = Parse(signedManifest), actual = Parse(actualManifest);
        foreach ((string file, string hash) in signed)
        {
            if (!actual.TryGetValue(file, out string? now))
            {
                return $"signed file {file} is missing";
            }
            if (now != hash)
            {
                return $"file {file} changed after signing";
            }
        }
        string? added = actual.Keys.FirstOrDefault(f => !signed.ContainsKey(f));
        return added is not null ? $"file {added} was added after signing" : "the files differ from the signed manifest";
    }
}
