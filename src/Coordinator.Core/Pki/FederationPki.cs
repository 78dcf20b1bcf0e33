using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Federated.Trust;

namespace Federated.Coordinator.Pki;

/// <summary>An identity (certificate with its private key) and the files it was written to.</summary>
public sealed record IssuedIdentity(string Name, FederationRole Role, string PfxPath, string CertificatePath, string KeyPath, string Thumbprint);

/// <summary>
/// The federation's private PKI: an ECDSA P-256 root CA that signs the server and adapter-signer certificates, the
/// CRL and role-carrying identities, and optionally a renewal intermediate that can sign client identities only.
/// An instance holds one signing key: the root's (offline, `pki` commands) or the intermediate's (serve's renewals).
/// Trust never extends beyond the root: the coordinator and the clients pin it as their only anchor.
/// </summary>
public sealed partial class FederationPki : IDisposable
{
    /// <summary>The trust file: the root certificate, then the renewal intermediate's when there is one.</summary>
    public const string CaCertificateFile = "ca.crt";

    /// <summary>The root's private key: written by `pki init` into the PKI folder or the --root-out folder; serve never reads it.</summary>
    public const string CaKeyFile = "ca.key";
    internal const string ServerName = "server";

    /// <summary>The coordinator's code-signing identity (adapter-signer.pfx): every adapter it serves or exports is CMS-signed with it.</summary>
    internal const string AdapterSignerName = "adapter-signer";

    private static readonly TimeSpan s_clockSkew = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan s_caLifetime = TimeSpan.FromDays(3650);
    private static readonly TimeSpan s_serverLifetime = TimeSpan.FromDays(730);
    private static readonly TimeSpan s_identityLifetime = TimeSpan.FromDays(365);

    private readonly X509Certificate2 _caCertificate;
    private readonly ECDsa _caKey;
    private readonly TimeProvider _time;
    private readonly string _directory;
    private readonly bool _isRoot;

    /// <summary>Folder under the CA's where a public copy of every issued certificate is kept, so `pki revoke --name` finds its serials.</summary>
    internal const string IssuedFolder = "issued";

    private FederationPki(X509Certificate2 caCertificate, ECDsa caKey, TimeProvider time, string directory, bool isRoot)
    {
        _caCertificate = caCertificate;
        _caKey = caKey;
        _time = time;
        _directory = directory;
        _isRoot = isRoot;
    }

    internal X509Certificate2 CaCertificate => _caCertificate;

    public void Dispose()
    {
        _caKey.Dispose();
        _caCertificate.Dispose();
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex IdentityNamePattern();

    /// <summary>Checks an identity name: it becomes a file name and a certificate common name.</summary>
    internal static void ValidateName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!IdentityNamePattern().IsMatch(name))
        {
            throw new ArgumentException(
                $"identity name '{name}' is invalid: use 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit",
                nameof(name));
        }
    }

    /// <summary>Issues the coordinator's TLS server certificate for localhost, the loopback addresses and <paramref name="hosts"/>.</summary>
    public IssuedIdentity IssueServer(string directory, IReadOnlyList<string> hosts, string? password)
    {
        ArgumentNullException.ThrowIfNull(hosts);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddIpAddress(IPAddress.Loopback);
        names.AddIpAddress(IPAddress.IPv6Loopback);
        foreach (string host in hosts.Distinct(StringComparer.OrdinalIgnoreCase))
        {
            if (IPAddress.TryParse(host, out IPAddress? address))
            {
                names.AddIpAddress(address);
            }
            else if (Uri.CheckHostName(host) == UriHostNameType.Dns)
            {
                names.AddDnsName(host);
            }
            else
            {
                throw new ArgumentException($"host '{host}' is neither a DNS name nor an IP address", nameof(hosts));
            }
        }
        string commonName = hosts.Count > 0 && !IPAddress.TryParse(hosts[0], out _) ? hosts[0] : "localhost";
        return Issue(directory, ServerName, new X500DistinguishedName($"CN={commonName}, O=Federated"), role: null, FederationTrust.ServerAuthOid, names.Build(), s_serverLifetime, password);
    }

    /// <summary>
    /// Issues the coordinator's adapter-signing certificate: code-signing extended key usage only (what
    /// AdapterSignature requires of a signer), so the TLS key never signs artefacts and this key never serves TLS.
    /// </summary>
    internal IssuedIdentity IssueAdapterSigner(string directory, string? password)
    {
        var subject = new X500DistinguishedName("CN=Federated adapter signer, O=Federated");
        return Issue(directory, AdapterSignerName, subject, role: null, FederationTrust.CodeSigningOid, alternativeNames: null, s_serverLifetime, password);
    }

    /// <summary>Issues a client, engineer or officer identity with the role in its certificate.</summary>
    public IssuedIdentity IssueIdentity(string directory, string name, FederationRole role, string? password, string? pfxPath = null)
    {
        ValidateName(name);
        var subject = new X500DistinguishedNameBuilder();
        subject.AddCommonName(name);
        subject.AddOrganizationalUnitName(FederationRoleExtension.Name(role));
        subject.AddOrganizationName("Federated");
        return Issue(directory, name, subject.Build(), role, FederationTrust.ClientAuthOid, alternativeNames: null, s_identityLifetime, password, pfxPath);
    }

    private IssuedIdentity Issue(
        string directory,
        string name,
        X500DistinguishedName subject,
        FederationRole? role,
        string extendedKeyUsage,
        X509Extension? alternativeNames,
        TimeSpan lifetime,
        string? password,
        string? pfxPath = null)
    {
        RequireRoot("issue identities");
        Directory.CreateDirectory(directory);
        string certificatePath = Path.Combine(directory, name + ".crt");
        string keyPath = Path.Combine(directory, name + ".key");
        pfxPath ??= Path.Combine(directory, name + ".pfx");
        foreach (string path in new[] { certificatePath, keyPath, pfxPath })
        {
            if (File.Exists(path))
            {
                throw new IOException($"'{path}' already exists; refusing to overwrite an identity");
            }
        }

        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using X509Certificate2 issued = Sign(new CertificateRequest(subject, key, HashAlgorithmName.SHA256), extendedKeyUsage, role, alternativeNames, lifetime);
        using X509Certificate2 withKey = issued.CopyWithPrivateKey(key);

        byte[] pkcs12 = withKey.ExportPkcs12(Pkcs12ExportPbeParameters.Pbes2Aes256Sha256, password);
        try
        {
            PkiFiles.WritePrivate(pfxPath, pkcs12);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(pkcs12);
        }
        // The PEM key is under the same password as the .pfx (encrypted PKCS#8, PBES2 with AES-256 and 600000 rounds of
        // PBKDF2-SHA256): a password that protects only one of two copies of the key protects nothing.
        PkiFiles.WritePrivate(keyPath, password is null
            ? key.ExportPkcs8PrivateKeyPem()
            : key.ExportEncryptedPkcs8PrivateKeyPem(password.AsSpan(), new PbeParameters(PbeEncryptionAlgorithm.Aes256Cbc, HashAlgorithmName.SHA256, 600_000)));
        PkiFiles.WritePublic(certificatePath, issued.ExportCertificatePem());
        // The whole trust file (root and renewal intermediate): a holder needs the intermediate to check renewed peers.
        string caCopy = Path.Combine(directory, CaCertificateFile);
        if (!File.Exists(caCopy))
        {
            PkiFiles.WritePublic(caCopy, File.ReadAllText(Path.Combine(_directory, CaCertificateFile)));
        }
        return new IssuedIdentity(name, role ?? default, pfxPath, certificatePath, keyPath, issued.GetCertHashString(HashAlgorithmName.SHA256).ToLowerInvariant());
    }

    /// <summary>
    /// Revokes every certificate this CA issued to <paramref name="name"/> (the recorded copies in issued/, and NAME.crt
    /// in the CA folder for identities made before that record existed): their serials go into the signed crl.pem.
    /// </summary>
    internal IReadOnlyList<string> Revoke(string name)
    {
        ValidateName(name);
        RequireRoot("sign the CRL");
        using FederationCaBundle bundle = FederationCaBundle.Load(Path.Combine(_directory, CaCertificateFile));
        var serials = new List<byte[]>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        IEnumerable<string> candidates = Directory.Exists(Path.Combine(_directory, IssuedFolder))
            ? Directory.EnumerateFiles(Path.Combine(_directory, IssuedFolder), "*.crt")
            : [];
        string legacy = Path.Combine(_directory, name + ".crt");
        if (File.Exists(legacy))
        {
            candidates = candidates.Append(legacy);
        }
        foreach (string path in candidates)
        {
            using X509Certificate2 certificate = X509CertificateLoader.LoadCertificateFromFile(path);
            // Certificates the root issued and renewals the intermediate signed (recorded by serve in the same issued/).
            if (certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false) != name
                || !(certificate.IssuerName.RawData.AsSpan().SequenceEqual(_caCertificate.SubjectName.RawData)
                    || bundle.Intermediates.Any(i => certificate.IssuerName.RawData.AsSpan().SequenceEqual(i.SubjectName.RawData))))
            {
                continue;
            }
            if (seen.Add(certificate.SerialNumber))
            {
                serials.Add(certificate.SerialNumberBytes.ToArray());
            }
        }
        if (serials.Count == 0)
        {
            throw new FileNotFoundException($"no certificate issued to '{name}' is recorded in '{_directory}'");
        }
        RevocationList.Revoke(_directory, _caCertificate, serials, _time.GetUtcNow());
        return [.. seen];
    }

    /// <summary>
    /// Serials (hex) of the certificates this CA issued to <paramref name="name"/> that are still valid: recorded in
    /// issued/, not expired and not on the CRL. Issuing a name that has one would silently make a second identity.
    /// </summary>
    internal IReadOnlyList<string> LiveSerials(string name)
    {
        ValidateName(name);
        string folder = Path.Combine(_directory, IssuedFolder);
        if (!Directory.Exists(folder))
        {
            return [];
        }
        string crlPath = Path.Combine(_directory, RevocationList.FileName);
        IReadOnlySet<System.Numerics.BigInteger> revoked = File.Exists(crlPath)
            ? RevocationList.ReadVerified(File.ReadAllText(crlPath), _caCertificate, out _, out _)
            : new HashSet<System.Numerics.BigInteger>();
        DateTimeOffset now = _time.GetUtcNow();
        var live = new List<string>();
        foreach (string path in Directory.EnumerateFiles(folder, "*.crt"))
        {
            using X509Certificate2 certificate = X509CertificateLoader.LoadCertificateFromFile(path);
            if (certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false) == name && certificate.NotAfter > now
                && FederationRoleExtension.Read(certificate) is not null && !revoked.Contains(RevocationList.Serial(certificate.SerialNumberBytes.Span)))
            {
                live.Add(certificate.SerialNumber);
            }
        }
        return live;
    }

    /// <summary>Largest CSR accepted by <see cref="Renew"/>.</summary>
    internal const int MaxCsrBytes = 4096;

    /// <summary>
    /// Signs a new certificate for <paramref name="current"/>'s subject, role and EKU over the key of
    /// <paramref name="csrDer"/>: the CSR's signature proves possession of that key, and everything else in it is
    /// ignored so a caller can never widen its name or role. The new key must be ECDSA P-256 and differ from the
    /// current one. Returns the certificate without a private key; a copy is recorded for `pki revoke`.
    /// </summary>
    internal X509Certificate2 Renew(X509Certificate2 current, ReadOnlySpan<byte> csrDer, TimeSpan lifetime)
    {
        ArgumentNullException.ThrowIfNull(current);
        ArgumentOutOfRangeException.ThrowIfLessThan(lifetime, TimeSpan.FromMinutes(10));
        if (csrDer.Length is 0 or > MaxCsrBytes)
        {
            throw new ArgumentException($"the CSR is {csrDer.Length} bytes; it must be 1..{MaxCsrBytes}", nameof(csrDer));
        }
        CertificateRequest request;
        try
        {
            request = CertificateRequest.LoadSigningRequest(csrDer, HashAlgorithmName.SHA256, out int consumed, CertificateRequestLoadOptions.Default);
            if (consumed != csrDer.Length)
            {
                throw new ArgumentException("the CSR has trailing bytes", nameof(csrDer));
            }
        }
        catch (CryptographicException ex)
        {
            throw new ArgumentException($"the CSR is malformed or its signature does not verify: {ex.Message}", nameof(csrDer), ex);
        }
        using (ECDsa? newKey = request.PublicKey.GetECDsaPublicKey())
        {
            if (newKey is null || newKey.ExportParameters(false).Curve.Oid.Value != "1.2.840.10045.3.1.7")
            {
                throw new ArgumentException("the CSR's key must be ECDSA P-256", nameof(csrDer));
            }
        }
        if (request.PublicKey.EncodedKeyValue.RawData.AsSpan().SequenceEqual(current.PublicKey.EncodedKeyValue.RawData))
        {
            throw new ArgumentException("the CSR reuses the current key; renew with a new key", nameof(csrDer));
        }
        if (FederationRoleExtension.Read(current) is not { } role)
        {
            throw new ArgumentException("the current certificate carries no valid role", nameof(current));
        }

        return Sign(new CertificateRequest(current.SubjectName, request.PublicKey, HashAlgorithmName.SHA256), FederationTrust.ClientAuthOid, role, alternativeNames: null, lifetime);
    }

    /// <summary>
    /// Signs an end-entity certificate for <paramref name="request"/>'s subject and key: one extended key usage, the
    /// digitalSignature key usage, the role when given, valid from a little before now to at most the CA's own end.
    /// A public copy is recorded in issued/ so that `pki revoke --name` finds its serial.
    /// </summary>
    private X509Certificate2 Sign(CertificateRequest request, string extendedKeyUsage, FederationRole? role, X509Extension? alternativeNames, TimeSpan lifetime)
    {
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(extendedKeyUsage)], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(_caCertificate, true, false));
        if (alternativeNames is not null)
        {
            request.CertificateExtensions.Add(alternativeNames);
        }
        if (role is { } r)
        {
            request.CertificateExtensions.Add(FederationRoleExtension.Create(r));
        }
        DateTimeOffset now = _time.GetUtcNow();
        DateTimeOffset notAfter = now + lifetime < _caCertificate.NotAfter ? now + lifetime : _caCertificate.NotAfter;
        byte[] serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F; // positive INTEGER, as RFC 5280 requires
        X509Certificate2 issued = request.Create(_caCertificate.SubjectName, X509SignatureGenerator.CreateForECDsa(_caKey), now - s_clockSkew, notAfter, serial);
        string issuedFolder = Path.Combine(_directory, IssuedFolder);
        Directory.CreateDirectory(issuedFolder);
        PkiFiles.WritePublic(Path.Combine(issuedFolder, Convert.ToHexStringLower(serial) + ".crt"), issued.ExportCertificatePem());
        return issued;
    }
}
