using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Trust;

namespace Federated.TestKit;

/// <summary>
/// A federation's certificates in one folder, made by the PKI code itself (`FederationPki.CreateFederation`): the root
/// (its key in the folder, so tests can issue and revoke), the renewal intermediate (ca.crt holds both), the server
/// and adapter signer, the engineer and officer of `pki init` and one client identity per name, all without passwords.
/// </summary>
public sealed class TestFederation
{
    private TestFederation(string directory) => Directory = directory;

    /// <summary>The PKI folder (what `serve --pki` reads).</summary>
    public string Directory { get; }

    /// <summary>The federation CA certificate (ca.crt).</summary>
    public string CaPath => Path.Combine(Directory, FederationPki.CaCertificateFile);

    public static TestFederation Create(string directory, IEnumerable<string> clients)
    {
        FederationPki.CreateFederation(directory, clients, TimeProvider.System, renewalIntermediate: true);
        return new TestFederation(directory);
    }

    /// <summary>A federation already made in <paramref name="directory"/> (for example by a test fixture).</summary>
    public static TestFederation Open(string directory) =>
        File.Exists(Path.Combine(directory, FederationPki.CaCertificateFile)) ? new TestFederation(directory) : throw new FileNotFoundException($"no federation in '{directory}'");

    /// <summary>The file name stem of the coordinator's TLS identity (server.pfx) and of its adapter signer.</summary>
    public static string ServerName => FederationPki.ServerName;

    /// <inheritdoc cref="ServerName"/>
    public static string AdapterSignerName => FederationPki.AdapterSignerName;

    /// <summary>
    /// Revokes the certificate in <paramref name="name"/>.pfx as `pki revoke` does (its serial into the CA-signed
    /// crl.pem, with the next CRL number) and returns the new CRL as DER.
    /// </summary>
    public byte[] Revoke(string name)
    {
        using X509Certificate2 certificate = Certificate(name);
        using X509Certificate2 ca = X509Certificate2.CreateFromPemFile(CaPath, Path.Combine(Directory, FederationPki.CaKeyFile));
        RevocationList.Revoke(Directory, ca, [certificate.SerialNumberBytes.ToArray()], DateTimeOffset.UtcNow);
        using X509Certificate2 publicCa = X509CertificateLoader.LoadCertificateFromFile(CaPath);
        RevocationList.ReadVerified(File.ReadAllText(Path.Combine(Directory, RevocationList.FileName)), publicCa, out _, out byte[] der);
        return der;
    }

    /// <summary>The certificate (with key) in <paramref name="name"/>.pfx.</summary>
    public X509Certificate2 Certificate(string name) => X509CertificateLoader.LoadPkcs12FromFile(Identity(name), password: null);

    /// <summary>The PKCS#12 identity (certificate and key) of <paramref name="name"/>.</summary>
    public string Identity(string name) => Path.Combine(Directory, name + ".pfx");
}
