using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;

namespace Federated.Coordinator.Pki;

/// <summary>Creating and loading the two authorities: the offline root and the coordinator's renewal intermediate.</summary>
public sealed partial class FederationPki
{
    /// <summary>The renewal intermediate's files in the PKI folder (intermediate.crt, intermediate.key): serve renews client certificates with it.</summary>
    internal const string IntermediateName = "intermediate";

    private static readonly TimeSpan s_intermediateLifetime = TimeSpan.FromDays(1825);

    /// <summary>
    /// Creates a new federation root in <paramref name="directory"/> (which must not already hold one): ca.crt there,
    /// the root key ca.key in <paramref name="rootKeyDirectory"/> (the folder meant to be carried off the coordinator
    /// host; <paramref name="directory"/> when null). With <paramref name="renewalIntermediate"/> it also makes the
    /// constrained renewal intermediate (intermediate.crt and .key in <paramref name="directory"/>), whose certificate
    /// follows the root's in ca.crt. Returns the root authority.
    /// </summary>
    public static FederationPki CreateCa(string directory, TimeProvider time, string? rootKeyDirectory = null, bool renewalIntermediate = false)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(time);
        Directory.CreateDirectory(directory);
        rootKeyDirectory ??= directory;
        Directory.CreateDirectory(rootKeyDirectory);
        DateTimeOffset now = time.GetUtcNow();

        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName("CN=Federated federation CA, O=Federated"), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 1, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using X509Certificate2 root = request.CreateSelfSigned(now - s_clockSkew, now + s_caLifetime);

        string trustFile = root.ExportCertificatePem();
        if (renewalIntermediate)
        {
            using ECDsa intermediateKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            using X509Certificate2 intermediate = CreateIntermediate(root, key, intermediateKey, now);
            PkiFiles.WritePrivate(Path.Combine(directory, IntermediateName + ".key"), intermediateKey.ExportPkcs8PrivateKeyPem());
            PkiFiles.WritePublic(Path.Combine(directory, IntermediateName + ".crt"), intermediate.ExportCertificatePem());
            trustFile += "\n" + intermediate.ExportCertificatePem();
        }
        PkiFiles.WritePrivate(Path.Combine(rootKeyDirectory, CaKeyFile), key.ExportPkcs8PrivateKeyPem());
        PkiFiles.WritePublic(Path.Combine(directory, CaCertificateFile), trustFile + "\n");
        if (Path.GetFullPath(rootKeyDirectory) != Path.GetFullPath(directory))
        {
            // The carried-away folder keeps the public trust file beside the key, so it says which federation it is for.
            PkiFiles.WritePublic(Path.Combine(rootKeyDirectory, CaCertificateFile), trustFile + "\n");
        }
        return Load(directory, time, Path.Combine(rootKeyDirectory, CaKeyFile));
    }

    /// <summary>
    /// The renewal intermediate: a CA with pathLenConstraint 0, clientAuth as its only extended key usage and
    /// keyCertSign without cRLSign (the profile <see cref="RenewalIntermediate"/> enforces at every verifier).
    /// </summary>
    private static X509Certificate2 CreateIntermediate(X509Certificate2 root, ECDsa rootKey, ECDsa intermediateKey, DateTimeOffset now)
    {
        var request = new CertificateRequest(new X500DistinguishedName("CN=Federated renewal intermediate, O=Federated"), intermediateKey, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(FederationTrust.ClientAuthOid)], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(root, true, false));
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        DateTimeOffset notAfter = now + s_intermediateLifetime < root.NotAfter ? now + s_intermediateLifetime : root.NotAfter;
        return request.Create(root.SubjectName, X509SignatureGenerator.CreateForECDsa(rootKey), now - s_clockSkew, notAfter, serial);
    }

    /// <summary>
    /// A whole federation in one folder, without passwords: the root (its key in the folder too), the renewal
    /// intermediate when asked, the server and adapter-signer certificates, the engineer and officer of `pki init` and
    /// a client identity per name (simulations, tests and benchmarks).
    /// </summary>
    public static void CreateFederation(string directory, IEnumerable<string> clients, TimeProvider time, bool renewalIntermediate = false)
    {
        ArgumentNullException.ThrowIfNull(clients);
        using FederationPki authority = CreateCa(directory, time, renewalIntermediate: renewalIntermediate);
        authority.IssueServer(directory, [], password: null);
        authority.IssueAdapterSigner(directory, password: null);
        authority.IssueIdentity(directory, "engineer", FederationRole.Engineer, password: null);
        authority.IssueIdentity(directory, "officer", FederationRole.Officer, password: null);
        foreach (string name in clients)
        {
            authority.IssueIdentity(directory, name, FederationRole.Client, password: null);
        }
    }

    /// <summary>
    /// Loads the root for the offline `pki` commands: its certificate from the PKI folder's ca.crt and its key from
    /// <paramref name="rootKeyPath"/> (ca.key in the folder when null). Never called by serve.
    /// </summary>
    internal static FederationPki Load(string directory, TimeProvider time, string? rootKeyPath = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(time);
        string certificatePath = Path.Combine(directory, CaCertificateFile);
        string keyPath = rootKeyPath ?? Path.Combine(directory, CaKeyFile);
        if (!File.Exists(certificatePath))
        {
            throw new FileNotFoundException($"no federation CA in '{directory}': expected {CaCertificateFile} (run 'coordinator pki init')");
        }
        if (!File.Exists(keyPath))
        {
            throw new FileNotFoundException(rootKeyPath is null
                ? $"the root key is not in '{directory}' ({CaKeyFile}): pass --root-key FILE where 'pki init --root-out' put it"
                : $"root key '{keyPath}' does not exist");
        }
        return LoadAuthority(certificatePath, keyPath, time, directory, isRoot: true);
    }

    /// <summary>
    /// Loads the renewal intermediate serve signs renewals with (intermediate.crt and intermediate.key in the PKI
    /// folder); null when the folder has none. It can only sign client certificates; its certificate must be in ca.crt.
    /// </summary>
    internal static FederationPki? LoadRenewalIntermediate(string directory, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(time);
        string certificatePath = Path.Combine(directory, IntermediateName + ".crt");
        string keyPath = Path.Combine(directory, IntermediateName + ".key");
        if (!File.Exists(keyPath))
        {
            return null;
        }
        if (!File.Exists(certificatePath))
        {
            throw new FileNotFoundException($"'{keyPath}' has no certificate beside it ({IntermediateName}.crt)");
        }
        FederationPki intermediate = LoadAuthority(certificatePath, keyPath, time, directory, isRoot: false);
        try
        {
            if (!RenewalIntermediate.IsConstrained(intermediate._caCertificate, out string reason))
            {
                throw new CryptographicException($"'{certificatePath}' is not a renewal intermediate: {reason}");
            }
            using FederationCaBundle bundle = FederationCaBundle.Load(Path.Combine(directory, CaCertificateFile));
            if (!bundle.Intermediates.Any(i => i.RawDataMemory.Span.SequenceEqual(intermediate._caCertificate.RawDataMemory.Span)))
            {
                throw new CryptographicException($"'{certificatePath}' is not in {CaCertificateFile}: renewed certificates would chain nowhere");
            }
            return intermediate;
        }
        catch
        {
            intermediate.Dispose();
            throw;
        }
    }

    private static FederationPki LoadAuthority(string certificatePath, string keyPath, TimeProvider time, string directory, bool isRoot)
    {
        // The first certificate of the file: the root in ca.crt, the intermediate in intermediate.crt.
        using X509Certificate2 certificate = FederationCaBundle.LoadFirst(certificatePath);
        ECDsa key = ECDsa.Create();
        try
        {
            key.ImportFromPem(File.ReadAllText(keyPath));
            // Throws when the key is not the certificate's.
            X509Certificate2 withKey = certificate.CopyWithPrivateKey(key);
            return new FederationPki(withKey, key, time, Path.GetFullPath(directory), isRoot);
        }
        catch (Exception ex) when (ex is CryptographicException or ArgumentException)
        {
            key.Dispose();
            throw new CryptographicException($"'{keyPath}' does not hold the ECDSA key of '{certificatePath}': {ex.Message}", ex);
        }
    }

    /// <summary>
    /// Revokes the renewal intermediate(s) of ca.crt: their serials go into the root-signed crl.pem, and every verifier
    /// then refuses the client certificates they signed (FederationTrust checks the intermediate's serial too).
    /// </summary>
    internal IReadOnlyList<string> RevokeIntermediates()
    {
        RequireRoot("sign the CRL");
        using FederationCaBundle bundle = FederationCaBundle.Load(Path.Combine(_directory, CaCertificateFile));
        if (bundle.Intermediates.Count == 0)
        {
            throw new FileNotFoundException($"'{Path.Combine(_directory, CaCertificateFile)}' names no renewal intermediate to revoke");
        }
        RevocationList.Revoke(_directory, _caCertificate, [.. bundle.Intermediates.Select(i => i.SerialNumberBytes.ToArray())], _time.GetUtcNow());
        return [.. bundle.Intermediates.Select(i => i.SerialNumber)];
    }

    private void RequireRoot(string what)
    {
        if (!_isRoot)
        {
            throw new InvalidOperationException($"only the federation root may {what}; the renewal intermediate signs client renewals only");
        }
    }
}
