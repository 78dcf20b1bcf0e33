using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Trust;

/// <summary>A certificate holder the federation CA vouches for: the subject common name, its role and the certificate's SHA-256.</summary>
public sealed record FederationIdentity(string Name, FederationRole Role, string CertificateSha256);

/// <summary>Where a certificate's revocation is looked up (the CA-signed crl.pem); checked on every use, not only at the handshake.</summary>
public interface IRevocationCheck
{
    /// <summary>True when the certificate must be refused: it is revoked, or the revocation list cannot be trusted.</summary>
    bool IsRefused(X509Certificate2 certificate, out string reason);
}

/// <summary>
/// The one trust decision of the federation, used by the coordinator and every client alike: a chain built with
/// CustomRootTrust and the federation CA as the only anchor (system roots never count), the purpose's EKU
/// required, end-entity certificates only, the digitalSignature key usage where a key usage is present, the CRL,
/// and for callers a role that the subject OU and the role extension agree on. A chain may pass through the renewal
/// intermediate only for a client identity whose one extended key usage is clientAuth: whoever holds the
/// intermediate's key (the coordinator) can never make a server, an adapter signer or another CA.
/// </summary>
public sealed class FederationTrust
{
    /// <summary>id-kp-serverAuth (RFC 5280 4.2.1.12): the coordinator's TLS certificate.</summary>
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";

    /// <summary>id-kp-clientAuth: edge clients, engineers and officers.</summary>
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    /// <summary>id-kp-codeSigning: the coordinator's adapter signer.</summary>
    public const string CodeSigningOid = "1.3.6.1.5.5.7.3.3";

    private readonly TimeProvider _time;
    private readonly IRevocationCheck? _revocation;

    /// <param name="ca">The federation CA, the only trust anchor; owned by the caller.</param>
    /// <param name="revocation">The federation's CRL; null where none is consulted (a self-check of one's own certificate).</param>
    /// <param name="intermediates">Renewal intermediates from ca.crt (<see cref="FederationCaBundle"/>); owned by the caller.</param>
    public FederationTrust(X509Certificate2 ca, TimeProvider time, IRevocationCheck? revocation = null, IReadOnlyList<X509Certificate2>? intermediates = null)
    {
        ArgumentNullException.ThrowIfNull(ca);
        ArgumentNullException.ThrowIfNull(time);
        Ca = ca;
        _time = time;
        _revocation = revocation;
        Intermediates = intermediates ?? [];
    }

    /// <summary>The federation CA this trust is anchored in.</summary>
    public X509Certificate2 Ca { get; }

    /// <summary>The renewal intermediates chains may pass through (client identities only).</summary>
    public IReadOnlyList<X509Certificate2> Intermediates { get; }

    /// <summary>True when the certificate is on the federation's CRL (or the CRL cannot be trusted); callers check it on every call, not only at the handshake.</summary>
    public bool IsRevoked(X509Certificate2 certificate, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (_revocation is null)
        {
            reason = "";
            return false;
        }
        return _revocation.IsRefused(certificate, out reason);
    }

    /// <summary>
    /// True when the certificate is outside its validity period now (by this trust's clock). The handshake checks it
    /// once; a connection outlives that, so the coordinator and the edge check it again on every call.
    /// </summary>
    public bool IsExpired(X509Certificate2 certificate, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        DateTimeOffset now = _time.GetUtcNow();
        DateTimeOffset notAfter = new(certificate.NotAfter.ToUniversalTime(), TimeSpan.Zero);
        DateTimeOffset notBefore = new(certificate.NotBefore.ToUniversalTime(), TimeSpan.Zero);
        if (now > notAfter)
        {
            reason = $"certificate '{certificate.Subject}' expired at {notAfter:u} (now {now:u}); the connection must not be used any longer";
            return true;
        }
        if (now < notBefore)
        {
            reason = $"certificate '{certificate.Subject}' is not valid before {notBefore:u} (now {now:u})";
            return true;
        }
        reason = "";
        return false;
    }

    /// <summary>Checks a certificate presented by an edge client or an admin (or a peer): chain, revocation, name and role.</summary>
    public bool TryValidateClient(X509Certificate2? certificate, out FederationIdentity? identity, out string reason)
    {
        identity = null;
        if (certificate is null)
        {
            reason = "no client certificate";
            return false;
        }
        if (!TryBuildChain(certificate, ClientAuthOid, out X509Certificate2? intermediate, out reason) || IsRevoked(certificate, out reason))
        {
            return false;
        }
        // The root revokes a compromised intermediate by its serial: everything it signed falls with it.
        if (intermediate is not null && IsRevoked(intermediate, out string intermediateRevoked))
        {
            reason = $"certificate '{certificate.Subject}' was issued by a revoked intermediate: {intermediateRevoked}";
            return false;
        }
        string name = certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        if (string.IsNullOrEmpty(name))
        {
            reason = "the certificate has no subject common name";
            return false;
        }
        if (FederationRoleExtension.Read(certificate) is not { } role)
        {
            reason = "the certificate carries no valid federation role (OU and role extension must agree)";
            return false;
        }
        identity = new FederationIdentity(name, role, certificate.GetCertHashString(HashAlgorithmName.SHA256).ToLowerInvariant());
        reason = "";
        return true;
    }

    /// <summary>
    /// Checks the coordinator's TLS certificate as a client sees it in the handshake: the host name must match
    /// (checked by SslStream), the chain must end at the CA with serverAuth and it must not be revoked. On success
    /// <paramref name="server"/> is a copy the caller owns (to verify what the coordinator signs with the key TLS authenticated).
    /// </summary>
    public bool TryValidateServer(X509Certificate? presented, SslPolicyErrors errors, out X509Certificate2? server, out string reason)
    {
        server = null;
        if (presented is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
        {
            reason = "the coordinator presented no certificate";
            return false;
        }
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
        {
            reason = $"the coordinator's certificate '{presented.Subject}' does not name the host connected to";
            return false;
        }
        // RemoteCertificateChainErrors is expected (the platform does not trust the private CA) and is replaced by our own chain.
        X509Certificate2 copy = X509CertificateLoader.LoadCertificate(presented.GetRawCertData());
        if (!TryBuildChain(copy, ServerAuthOid, out string chain) || IsRevoked(copy, out chain))
        {
            copy.Dispose();
            reason = $"the coordinator's certificate is not from this federation: {chain}";
            return false;
        }
        server = copy;
        reason = "";
        return true;
    }

    /// <summary>Checks a chain to the federation CA for the given EKU purpose, an end-entity certificate with a signing key.</summary>
    public bool TryBuildChain(X509Certificate2 certificate, string extendedKeyUsage, out string reason) =>
        TryBuildChain(certificate, extendedKeyUsage, out _, out reason);

    /// <summary>
    /// As <see cref="TryBuildChain(X509Certificate2, string, out string)"/>; <paramref name="intermediate"/> is the
    /// renewal intermediate the chain went through (one of <see cref="Intermediates"/>), null for a root-issued one.
    /// </summary>
    public bool TryBuildChain(X509Certificate2 certificate, string extendedKeyUsage, out X509Certificate2? intermediate, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        ArgumentException.ThrowIfNullOrEmpty(extendedKeyUsage);
        intermediate = null;
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(Ca);
        foreach (X509Certificate2 candidate in Intermediates)
        {
            chain.ChainPolicy.ExtraStore.Add(candidate);
        }
        // Revocation is checked by IsRevoked against the CA-signed crl.pem (see RevocationList for why not here).
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(extendedKeyUsage));
        chain.ChainPolicy.VerificationTime = _time.GetUtcNow().UtcDateTime;
        chain.ChainPolicy.VerificationTimeIgnored = false;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        if (!chain.Build(certificate))
        {
            string status = string.Join("; ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
            reason = $"certificate '{certificate.Subject}' does not chain to the federation CA for this purpose ({status})";
            return false;
        }
        // CustomRootTrust already pins the anchor; this guards against a chain ending in any other root.
        X509Certificate2 root = chain.ChainElements[^1].Certificate;
        if (!root.RawDataMemory.Span.SequenceEqual(Ca.RawDataMemory.Span))
        {
            reason = $"certificate '{certificate.Subject}' chains to '{root.Subject}', not to the federation CA";
            return false;
        }
        if (certificate.Extensions["2.5.29.19"] is X509BasicConstraintsExtension { CertificateAuthority: true })
        {
            reason = $"certificate '{certificate.Subject}' is a CA certificate, not an end-entity identity";
            return false;
        }
        // The chain checks the EKU but not the key usage.
        // RFC 5280 4.2.1.3: an absent key usage extension leaves the key unrestricted; a present one must allow signing.
        if (certificate.Extensions["2.5.29.15"] is X509KeyUsageExtension usage && !usage.KeyUsages.HasFlag(X509KeyUsageFlags.DigitalSignature))
        {
            reason = $"certificate '{certificate.Subject}' lacks the digitalSignature key usage a TLS identity needs";
            return false;
        }
        return CheckPath(certificate, extendedKeyUsage, chain, out intermediate, out reason);
    }

    /// <summary>
    /// The federation's path rules, enforced here and not left to the platform: root then end entity, or root, one
    /// renewal intermediate within its profile (path length 0, clientAuth only, no cRLSign), then a client identity
    /// whose only extended key usage is clientAuth. Anything longer, or any other purpose through the intermediate, is refused.
    /// </summary>
    private bool CheckPath(X509Certificate2 certificate, string extendedKeyUsage, X509Chain chain, out X509Certificate2? intermediate, out string reason)
    {
        intermediate = null;
        int length = chain.ChainElements.Count;
        if (length == 2)
        {
            reason = "";
            return true;
        }
        if (length != 3)
        {
            reason = $"certificate '{certificate.Subject}' has a chain of {length} certificates; the federation allows the root's own certificates or one renewal intermediate (path length 0)";
            return false;
        }
        X509Certificate2 issuer = chain.ChainElements[1].Certificate;
        intermediate = Intermediates.FirstOrDefault(i => i.RawDataMemory.Span.SequenceEqual(issuer.RawDataMemory.Span));
        if (intermediate is null || !RenewalIntermediate.IsConstrained(intermediate, out reason))
        {
            reason = $"certificate '{certificate.Subject}' is issued by '{issuer.Subject}', which is not a constrained renewal intermediate of this federation";
            intermediate = null;
            return false;
        }
        if (extendedKeyUsage != ClientAuthOid || !RenewalIntermediate.HasOnlyExtendedKeyUsage(certificate, ClientAuthOid))
        {
            reason = $"certificate '{certificate.Subject}' is issued by the renewal intermediate, which may sign only client identities (clientAuth alone), never a server, an adapter signer or a CA";
            intermediate = null;
            return false;
        }
        reason = "";
        return true;
    }

    /// <summary>A refused client certificate's reason as a bounded metric attribute (the log line has the detail).</summary>
    public string RefusalKind(X509Certificate2? certificate)
    {
        if (certificate is null)
        {
            return "no_certificate";
        }
        if (IsRevoked(certificate, out _))
        {
            return "revoked";
        }
        if (IsExpired(certificate, out _))
        {
            return "expired";
        }
        return TryBuildChain(certificate, ClientAuthOid, out _) ? "invalid_identity" : "untrusted_chain";
    }
}
