using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Trust;

/// <summary>
/// The federation's trust file (ca.crt): the self-signed root first, the only trust anchor, then the renewal
/// intermediate when the federation has one. The intermediate is public; it only helps chains to the root, and every
/// chain through it is held to <see cref="RenewalIntermediate"/>'s constraints by <see cref="FederationTrust"/>.
/// </summary>
public sealed class FederationCaBundle : IDisposable
{
    private FederationCaBundle(X509Certificate2 root, IReadOnlyList<X509Certificate2> intermediates)
    {
        Root = root;
        Intermediates = intermediates;
    }

    /// <summary>The offline root: the one trust anchor, and the only signer of CRLs, servers and adapter signers.</summary>
    public X509Certificate2 Root { get; }

    /// <summary>Renewal intermediates (zero or one from `pki init`); each checked against <see cref="RenewalIntermediate"/> at load.</summary>
    public IReadOnlyList<X509Certificate2> Intermediates { get; }

    /// <summary>Reads ca.crt; refuses a file whose first certificate is not a self-signed CA or whose other certificates are not constrained renewal intermediates of it.</summary>
    /// <exception cref="CryptographicException">The file holds no certificate or a certificate the federation would not accept.</exception>
    public static FederationCaBundle Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var all = new X509Certificate2Collection();
        try
        {
            all.ImportFromPemFile(path);
        }
        catch (CryptographicException ex)
        {
            throw new CryptographicException($"'{path}' is not a PEM certificate file: {ex.Message}", ex);
        }
        if (all.Count == 0)
        {
            // A DER ca.crt (one certificate, no intermediate) is still accepted.
            all.Add(X509CertificateLoader.LoadCertificateFromFile(path));
        }
        X509Certificate2 root = all[0];
        var intermediates = new List<X509Certificate2>();
        try
        {
            if (!root.SubjectName.RawData.AsSpan().SequenceEqual(root.IssuerName.RawData)
                || root.Extensions["2.5.29.19"] is not X509BasicConstraintsExtension { CertificateAuthority: true })
            {
                throw new CryptographicException($"'{path}': the first certificate ('{root.Subject}') must be the federation's self-signed root CA");
            }
            for (int i = 1; i < all.Count; i++)
            {
                X509Certificate2 candidate = all[i];
                if (!candidate.IssuerName.RawData.AsSpan().SequenceEqual(root.SubjectName.RawData))
                {
                    throw new CryptographicException($"'{path}': certificate '{candidate.Subject}' is not issued by the root '{root.Subject}'");
                }
                if (!RenewalIntermediate.IsConstrained(candidate, out string reason))
                {
                    throw new CryptographicException($"'{path}': {reason}");
                }
                intermediates.Add(candidate);
            }
            return new FederationCaBundle(root, intermediates);
        }
        catch
        {
            foreach (X509Certificate2 certificate in all)
            {
                certificate.Dispose();
            }
            throw;
        }
    }

    /// <summary>The first certificate of a PEM (or DER) file, the others disposed: the root of ca.crt, or a single certificate file.</summary>
    public static X509Certificate2 LoadFirst(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var all = new X509Certificate2Collection();
        all.ImportFromPemFile(path);
        if (all.Count == 0)
        {
            return X509CertificateLoader.LoadCertificateFromFile(path);
        }
        for (int i = 1; i < all.Count; i++)
        {
            all[i].Dispose();
        }
        return all[0];
    }

    /// <summary>The root certificate of ca.crt alone (for checks that must never go through the intermediate: adapter signatures, CRLs).</summary>
    public static X509Certificate2 LoadRoot(string path)
    {
        FederationCaBundle bundle = Load(path);
        foreach (X509Certificate2 intermediate in bundle.Intermediates)
        {
            intermediate.Dispose();
        }
        return bundle.Root;
    }

    public void Dispose()
    {
        Root.Dispose();
        foreach (X509Certificate2 intermediate in Intermediates)
        {
            intermediate.Dispose();
        }
    }
}

/// <summary>
/// The profile of the renewal intermediate, the only CA key a coordinator may hold: a CA with path length 0 (no CA
/// below it), clientAuth as its only extended key usage, and keyCertSign without cRLSign. Verifiers enforce this
/// profile on every chain through an intermediate, whatever the platform's chain engine does with it.
/// </summary>
public static class RenewalIntermediate
{
    /// <summary>Whether <paramref name="certificate"/> is a CA certificate within the renewal intermediate's constraints.</summary>
    public static bool IsConstrained(X509Certificate2 certificate, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (certificate.Extensions["2.5.29.19"] is not X509BasicConstraintsExtension { CertificateAuthority: true } constraints)
        {
            reason = $"issuer '{certificate.Subject}' is not a CA certificate";
            return false;
        }
        if (!constraints.HasPathLengthConstraint || constraints.PathLengthConstraint != 0)
        {
            reason = $"intermediate '{certificate.Subject}' lacks pathLenConstraint 0 (it could certify further CAs)";
            return false;
        }
        if (!HasOnlyExtendedKeyUsage(certificate, FederationTrust.ClientAuthOid))
        {
            reason = $"intermediate '{certificate.Subject}' is not restricted to the clientAuth extended key usage";
            return false;
        }
        if (certificate.Extensions["2.5.29.15"] is not X509KeyUsageExtension usage
            || !usage.KeyUsages.HasFlag(X509KeyUsageFlags.KeyCertSign) || usage.KeyUsages.HasFlag(X509KeyUsageFlags.CrlSign))
        {
            reason = $"intermediate '{certificate.Subject}' must have keyCertSign and must not have cRLSign (CRLs are the root's)";
            return false;
        }
        reason = "";
        return true;
    }

    /// <summary>True when the certificate has an extended key usage extension listing exactly <paramref name="oid"/>.</summary>
    public static bool HasOnlyExtendedKeyUsage(X509Certificate2 certificate, string oid)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (certificate.Extensions["2.5.29.37"] is not X509EnhancedKeyUsageExtension eku)
        {
            return false;
        }
        OidCollection usages = eku.EnhancedKeyUsages;
        return usages.Count == 1 && usages[0].Value == oid;
    }
}
