using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Grpc.Core;

namespace Federated.EdgeClient.Rounds;

/// <summary>Downloads a global adapter in chunks and accepts it only if its size, SHA-256 and the coordinator's signature all check out.</summary>
internal static class AdapterDownload
{
    /// <summary>Largest adapter accepted (guards memory against a lying size).</summary>
    public const long MaxAdapterBytes = 1L << 31;

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
        byte[]? signature = null;
        string? sha256 = null;
        using AsyncServerStreamingCall<AdapterChunk> call = connection.Edge.DownloadAdapter(
            new DownloadAdapterRequest { Sha256 = adapter.Sha256 }, connection.Call(cancellationToken));
        await foreach (AdapterChunk chunk in call.ResponseStream.ReadAllAsync(cancellationToken))
        {
            if (chunk.TotalSize != adapter.SizeBytes || chunk.Offset != (ulong)received || (ulong)received + (ulong)chunk.Data.Length > adapter.SizeBytes)
            {
                throw new InvalidDataException($"adapter chunk at offset {chunk.Offset} (total {chunk.TotalSize}) does not continue the download at {received} of {adapter.SizeBytes}");
            }
            chunk.Data.Span.CopyTo(content.AsSpan((int)received));
            received += chunk.Data.Length;
            if (chunk.Signature.Length > 0)
            {
                signature = chunk.Signature.ToByteArray();
                sha256 = chunk.Sha256;
            }
        }
        if (received != content.Length || signature is null)
        {
            throw new InvalidDataException($"adapter download ended at {received} of {content.Length} bytes without a signature");
        }
        byte[] digest = SHA256.HashData(content);
        if (!string.Equals(Convert.ToHexStringLower(digest), adapter.Sha256, StringComparison.Ordinal) || sha256 != adapter.Sha256)
        {
            throw new InvalidDataException($"downloaded adapter hashes to {Convert.ToHexStringLower(digest)}, not the manifest's {adapter.Sha256}");
        }
        using ECDsa? key = connection.ServerCertificate?.GetECDsaPublicKey();
        if (key is null || !key.VerifyHash(digest, signature, DSASignatureFormat.IeeeP1363FixedFieldConcatenation))
        {
            throw new InvalidDataException("the adapter's signature does not verify with the coordinator's TLS certificate");
        }
        return content;
    }
}
