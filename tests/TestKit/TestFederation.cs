using Federated.Coordinator.Pki;

namespace Federated.TestKit;

/// <summary>
/// A federation's certificates in one folder, made by the PKI code itself (`FederationPki.CreateFederation`): the CA,
/// the server, the engineer and officer of `pki init` and one client identity per name, all without passwords.
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
        FederationPki.CreateFederation(directory, clients, TimeProvider.System);
        return new TestFederation(directory);
    }

    /// <summary>The PKCS#12 identity (certificate and key) of <paramref name="name"/>.</summary>
    public string Identity(string name) => Path.Combine(Directory, name + ".pfx");
}
