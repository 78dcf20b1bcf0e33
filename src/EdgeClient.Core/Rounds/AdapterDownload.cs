using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Peft;
using Federated.Training.Provenance;
using Grpc.Core;

namespace Federated.EdgeClient.Rounds;

/// <summary>The global adapter's signer is on the newest CRL this edge has seen: the adapter is refused, however well it verifies.</summary>
internal sealed class AdapterSignerRevokedException(string message) : Exception(message);

/// <summary>
/// Downloads a global adapter in chunks and accepts it only if its size and SHA-256 match the manifest, its CMS
/// signature verifies against the federation CA (a code-signing certificate of this federation, over these bytes)
/// and the signer is not revoked by the newest CRL the connection's edge has seen.
/// </summary>
internal static class AdapterDownload
{
    /// <summary>Largest adapter accepted (guards memory against a lying size).</summary>
    public const long MaxAdapterBytes = 1L << 31;

    /// <summary>Largest CMS signature accepted.</summary>
    public const int MaxSignatureBytes = 1 << 20;

    /// <exception cref="InvalidDataException">The stream does not deliver the manifest's size or hash.</exception>
    /// <exception cref="AdapterSignatureException">The adapter is unsigned, changed after signing, or signed outside the federation.</exception>
    /// <exception cref="AdapterSignerRevokedException">The signer's certificate is revoked.</exception>
    public static async Task<byte[]> DownloadAsync(CoordinatorConnection connection, AdapterRef adapter, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(adapter);
        if (adapter.SizeBytes is 0 or > MaxAdapterBytes)
        {
            throw new InvalidDataException($"adapter size {adapter.SizeBytes} is outside 1..{MaxAdapterBytes} bytes");
        }
        byte[] content = new byte[adapter.SizeBytes];
        long received = 0;
        byte[] signature = [];
        string? sha256 = null;
        using AsyncServerStreamingCall<AdapterChunk> call = connection.Edge.DownloadAdapter(
            new DownloadAdapterRequest { Sha256 = adapter.Sha256 }, connection.Call(cancellationToken));
        await foreach (AdapterChunk chunk in call.ResponseStream.ReadAllAsync(cancellationToken))
        {
            if (chunk.TotalSize != adapter.SizeBytes || chunk.Offset != (ulong)received || (ulong)received + (ulong)chunk.Data.Length > adapter.SizeBytes)
            {
                throw new InvalidDataException($"adapter chunk at offset {chunk.Offset} (total {chunk.TotalSize}) does not continue the download at {received} of {adapter.SizeBytes}");
            }
            if (chunk.CmsSignature.Length > MaxSignatureBytes)
            {
                throw new InvalidDataException($"the adapter's signature is {chunk.CmsSignature.Length} bytes; at most {MaxSignatureBytes} are accepted");
            }
            chunk.Data.Span.CopyTo(content.AsSpan((int)received));
            received += chunk.Data.Length;
            if (chunk.Sha256.Length > 0)
            {
                signature = chunk.CmsSignature.ToByteArray();
                sha256 = chunk.Sha256;
            }
        }
        if (received != content.Length || sha256 is null)
        {
            throw new InvalidDataException($"adapter download ended at {received} of {content.Length} bytes without its final chunk");
        }
        string digest = Convert.ToHexStringLower(SHA256.HashData(content));
        if (!string.Equals(digest, adapter.Sha256, StringComparison.Ordinal) || sha256 != adapter.Sha256)
        {
            throw new InvalidDataException($"downloaded adapter hashes to {digest}, not the manifest's {adapter.Sha256}");
        }
        using X509Certificate2 signer = Verify(content, signature, connection.FederationCa);
        if (connection.Revocation.IsRefused(signer, out string revoked))
        {
            throw new AdapterSignerRevokedException($"the adapter's signer is revoked: {revoked}");
        }
        return content;
    }

    /// <summary>Checks a global adapter blob's CMS signature against the federation CA; returns the signer's certificate.</summary>
    /// <exception cref="AdapterSignatureException">With one line naming what is wrong.</exception>
    public static X509Certificate2 Verify(ReadOnlySpan<byte> content, ReadOnlySpan<byte> cmsSignature, X509Certificate2 federationCa) =>
        AdapterSignature.VerifyFile(content, PeftAdapter.WeightsFileName, cmsSignature, federationCa);
}
