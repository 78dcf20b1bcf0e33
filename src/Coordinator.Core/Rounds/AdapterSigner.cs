using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Training.Peft;
using Federated.Training.Provenance;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// CMS-signs the global adapters the coordinator serves with its code-signing certificate (adapter-signer.pfx),
/// through the same <see cref="AdapterSignature"/> that signs exports, so an edge client checks one kind of signature.
/// </summary>
internal sealed class AdapterSigner : IDisposable
{
    /// <summary>The file name the signed manifest names: a served blob is a PEFT adapter_model.safetensors.</summary>
    public const string BlobFileName = PeftAdapter.WeightsFileName;

    private readonly X509Certificate2 _certificate;

    /// <summary>Takes ownership of <paramref name="certificate"/>; checks it can sign and that its signature verifies against the CA.</summary>
    public AdapterSigner(X509Certificate2 certificate, X509Certificate2 federationCa)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        ArgumentNullException.ThrowIfNull(federationCa);
        if (!certificate.HasPrivateKey)
        {
            throw new ArgumentException($"adapter-signing certificate {certificate.Subject} has no private key", nameof(certificate));
        }
        // Fail at start-up, not at the first round: a signature every client would refuse is worse than none.
        byte[] probe = RandomNumberGenerator.GetBytes(32);
        try
        {
            AdapterSignature.VerifyFile(probe, BlobFileName, AdapterSignature.SignFile(probe, BlobFileName, certificate), federationCa).Dispose();
        }
        catch (AdapterSignatureException ex)
        {
            throw new ArgumentException($"adapter-signing certificate {certificate.Subject} is not usable: {ex.Message}", nameof(certificate), ex);
        }
        _certificate = certificate;
    }

    /// <summary>
    /// Loads adapter-signer.pfx (issued by `pki init` with the root); start-up stops naming the missing file, and
    /// refuses a signer whose signature would not verify against the root.
    /// </summary>
    public static AdapterSigner Load(string pki, X509Certificate2 ca)
    {
        string path = Path.Combine(pki, FederationPki.AdapterSignerName + ".pfx");
        if (!File.Exists(path))
        {
            throw new FileNotFoundException(
                $"PKI folder '{pki}' lacks {FederationPki.AdapterSignerName}.pfx (the adapter-signing certificate); issue one with the root: 'coordinator pki issue --pki {pki} --adapter-signer'");
        }
        X509Certificate2 certificate = X509CertificateLoader.LoadPkcs12FromFile(path, password: null);
        try
        {
            return new AdapterSigner(certificate, ca);
        }
        catch (ArgumentException ex)
        {
            certificate.Dispose();
            throw new InvalidOperationException($"'{path}': {ex.Message.Split(" (Parameter")[0]}", ex);
        }
    }

    public X509Certificate2 Certificate => _certificate;

    /// <summary>CMS SignedData (DER) over the blob's one-line manifest, as <see cref="AdapterSignature.VerifyFile"/> checks it.</summary>
    public byte[] Sign(ReadOnlySpan<byte> adapter) => AdapterSignature.SignFile(adapter, BlobFileName, _certificate);

    public void Dispose() => _certificate.Dispose();
}
