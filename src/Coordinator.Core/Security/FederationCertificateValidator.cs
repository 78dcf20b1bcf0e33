using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;

namespace Federated.Coordinator.Security;

/// <summary>
/// Validates peer certificates against the federation CA alone: a chain built with CustomRootTrust and the CA
/// as the only trust anchor (system roots never count), the purpose's EKU required, and a role for clients.
/// </summary>
internal sealed class FederationCertificateValidator
{
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";

    private readonly X509Certificate2 _ca;
    private readonly TimeProvider _time;
    private readonly RevocationCache? _revocation;

    /// <param name="revocation">The CRL of `pki revoke`; null only where no client certificates are checked (server self-check).</param>
    public FederationCertificateValidator(X509Certificate2 ca, TimeProvider time, RevocationCache? revocation = null)
    {
        ArgumentNullException.ThrowIfNull(ca);
        ArgumentNullException.ThrowIfNull(time);
        _ca = ca;
        _time = time;
        _revocation = revocation;
    }

    /// <summary>True when the certificate is on the federation's CRL (or the CRL cannot be trusted); checked on every call, not only at the handshake.</summary>
    public bool IsRevoked(X509Certificate2 certificate, out string reason)
    {
        if (_revocation is null)
        {
            reason = "";
            return false;
        }
        return _revocation.IsRefused(certificate, out reason);
    }

    /// <summary>Checks a certificate presented by an edge client or an admin; returns its identity or why it was refused.</summary>
    public bool TryValidateClient(X509Certificate2? certificate, out CallerIdentity? identity, out string reason)
    {
        identity = null;
        if (certificate is null)
        {
            reason = "no client certificate";
            return false;
        }
        if (!TryBuildChain(certificate, ClientAuthOid, out reason) || IsRevoked(certificate, out reason))
        {
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
        identity = new CallerIdentity(name, role, certificate.GetCertHashString(HashAlgorithmName.SHA256).ToLowerInvariant());
        reason = "";
        return true;
    }

    /// <summary>Checks a chain to the federation CA for the given EKU purpose.</summary>
    public bool TryBuildChain(X509Certificate2 certificate, string extendedKeyUsage, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(_ca);
        // Revocation is checked by IsRevoked against the CA-signed crl.pem (see RevocationList for why not here).
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(extendedKeyUsage));
        chain.ChainPolicy.VerificationTime = _time.GetUtcNow().UtcDateTime;
        chain.ChainPolicy.VerificationTimeIgnored = false;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        bool built = chain.Build(certificate);
        if (!built)
        {
            string status = string.Join("; ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
            reason = $"certificate '{certificate.Subject}' does not chain to the federation CA for this purpose ({status})";
            return false;
        }
        // CustomRootTrust already pins the anchor; this guards against a chain ending in any other root.
        X509Certificate2 root = chain.ChainElements[^1].Certificate;
        if (!root.RawDataMemory.Span.SequenceEqual(_ca.RawDataMemory.Span))
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
        reason = "";
        return true;
    }
}
