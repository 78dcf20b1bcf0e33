using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.EdgeClient.Transport;

/// <summary>Chain checks against the federation CA alone (CustomRootTrust); the system's roots are never consulted.</summary>
internal static class FederationTrust
{
    public const string ServerAuthOid = "1.3.6.1.5.5.7.3.1";

    public static bool TryValidate(X509Certificate2 certificate, X509Certificate2 ca, string extendedKeyUsage, TimeProvider time, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        ArgumentNullException.ThrowIfNull(ca);
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.ApplicationPolicy.Add(new Oid(extendedKeyUsage));
        chain.ChainPolicy.VerificationTime = time.GetUtcNow().UtcDateTime;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        if (!chain.Build(certificate))
        {
            reason = $"'{certificate.Subject}' does not chain to the federation CA for this purpose ({string.Join("; ", chain.ChainStatus.Select(s => s.Status).Distinct())})";
            return false;
        }
        if (!chain.ChainElements[^1].Certificate.RawDataMemory.Span.SequenceEqual(ca.RawDataMemory.Span))
        {
            reason = $"'{certificate.Subject}' chains to another root";
            return false;
        }
        // RFC 5280 4.2.1.3: an absent key usage extension leaves the key unrestricted; a present one must allow signing.
        if (certificate.Extensions["2.5.29.15"] is X509KeyUsageExtension usage && !usage.KeyUsages.HasFlag(X509KeyUsageFlags.DigitalSignature))
        {
            reason = $"'{certificate.Subject}' lacks the digitalSignature key usage a TLS identity needs";
            return false;
        }
        reason = "";
        return true;
    }

    /// <summary>Validates the coordinator's TLS certificate: the host name must match (checked by SslStream) and the chain must end at the CA with serverAuth.</summary>
    public static bool ValidateServer(X509Certificate2 ca, X509Certificate? certificate, SslPolicyErrors errors, TimeProvider time, out string reason)
    {
        if (certificate is null || errors.HasFlag(SslPolicyErrors.RemoteCertificateNotAvailable))
        {
            reason = "the coordinator presented no certificate";
            return false;
        }
        if (errors.HasFlag(SslPolicyErrors.RemoteCertificateNameMismatch))
        {
            reason = $"the coordinator's certificate '{certificate.Subject}' does not name the host connected to";
            return false;
        }
        // RemoteCertificateChainErrors is expected (the platform does not trust the private CA) and is replaced by our own chain.
        using X509Certificate2 server = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return TryValidate(server, ca, ServerAuthOid, time, out reason);
    }
}
