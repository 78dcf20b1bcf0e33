using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Federated.Protos.V1;
using Federated.Trust;

namespace Federated.Wire;

/// <summary>A participant's key signature and the certificate (DER) whose key made it, as the coordinator forwards them.</summary>
public sealed record SignedKeys(byte[] Certificate, byte[] Signature);

/// <summary>
/// SecAgg+ keys signed with the participant's mTLS identity key (Bonawitz et al. 2017, section 4, the actively secure
/// variant): a coordinator that forwards a roster cannot substitute a participant's keys without a certificate in that
/// participant's name from the federation CA. The signature covers a domain label, the run, the round, the
/// participant's index and name and both public keys, each length-prefixed, so no signature is valid for another
/// round, index or identity.
/// </summary>
public static class KeyAdvertisement
{
    private static readonly byte[] s_label = Encoding.ASCII.GetBytes("federated.v1/secagg-keys");

    /// <summary>The exact bytes that are signed.</summary>
    public static byte[] SignedBytes(RoundRef round, uint index, string clientId, ReadOnlySpan<byte> encryptionKey, ReadOnlySpan<byte> maskKey)
    {
        ArgumentNullException.ThrowIfNull(round);
        ArgumentNullException.ThrowIfNull(clientId);
        var fields = new LengthPrefixed(s_label, round);
        fields.Add(BigEndian(index));
        fields.Add(Encoding.UTF8.GetBytes(clientId));
        fields.Add(encryptionKey);
        fields.Add(maskKey);
        return fields.ToArray();
    }

    private static readonly byte[] s_survivorsLabel = Encoding.ASCII.GetBytes("federated.v1/secagg-survivors");

    /// <summary>The bytes a survivor signs in the consistency check: the label, the run, the round and the sorted survivor set.</summary>
    public static byte[] SurvivorBytes(RoundRef round, IEnumerable<int> survivors)
    {
        ArgumentNullException.ThrowIfNull(round);
        ArgumentNullException.ThrowIfNull(survivors);
        int[] sorted = [.. survivors.Distinct().Order()];
        byte[] set = new byte[4 * sorted.Length];
        for (int i = 0; i < sorted.Length; i++)
        {
            BinaryPrimitives.WriteUInt32BigEndian(set.AsSpan(4 * i), (uint)sorted[i]);
        }
        var fields = new LengthPrefixed(s_survivorsLabel, round);
        fields.Add(set);
        return fields.ToArray();
    }

    /// <summary>A survivor's signature on the survivor set with its identity key.</summary>
    public static byte[] SignSurvivors(X509Certificate2 identity, RoundRef round, IEnumerable<int> survivors)
    {
        ArgumentNullException.ThrowIfNull(identity);
        return SignBytes(identity, SurvivorBytes(round, survivors), "the survivor set");
    }

    /// <summary>Whether <paramref name="signature"/> is the certificate's key's signature on the survivor set.</summary>
    public static bool VerifySurvivors(X509Certificate2 certificate, RoundRef round, IEnumerable<int> survivors, ReadOnlySpan<byte> signature)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        return VerifyBytes(certificate, SurvivorBytes(round, survivors), signature);
    }

    /// <summary>
    /// The consistency check a participant runs before it reveals any share (Bonawitz et al. 2017, section 4): its own
    /// unmask request must agree with the survivor set (itself and every neighbour it is told survived in the set, no
    /// neighbour it is told dropped in it), and at least <paramref name="threshold"/> distinct neighbours (itself
    /// included), known by the certificates of the verified roster, must have signed that same set. Throws
    /// <see cref="InvalidDataException"/> naming what failed; the participant then reveals nothing.
    /// </summary>
    public static void VerifySurvivorSet(RoundRef round, int self, IReadOnlyCollection<int> survivors, IReadOnlyCollection<int> toldSurvived,
        IReadOnlyCollection<int> toldDropped, IEnumerable<(int Index, byte[] Signature)> signatures, IReadOnlyDictionary<int, byte[]> neighbourCertificates,
        int threshold)
    {
        ArgumentNullException.ThrowIfNull(survivors);
        ArgumentNullException.ThrowIfNull(toldSurvived);
        ArgumentNullException.ThrowIfNull(toldDropped);
        ArgumentNullException.ThrowIfNull(signatures);
        ArgumentNullException.ThrowIfNull(neighbourCertificates);
        var set = survivors.ToHashSet();
        if (!set.Contains(self))
        {
            throw new InvalidDataException($"the survivor set does not contain this participant ({self}), whose upload was accepted");
        }
        foreach (int outside in toldSurvived.Where(i => !set.Contains(i)))
        {
            throw new InvalidDataException($"the unmask request says participant {outside} survived, but the survivor set does not list it");
        }
        foreach (int inside in toldDropped.Where(set.Contains))
        {
            throw new InvalidDataException($"the unmask request says participant {inside} dropped, but the survivor set lists it (inconsistent survivor sets)");
        }
        var valid = new HashSet<int> { self };
        foreach ((int index, byte[] signature) in signatures)
        {
            if (index == self || !set.Contains(index) || valid.Contains(index) || !neighbourCertificates.TryGetValue(index, out byte[]? der))
            {
                continue;
            }
            using X509Certificate2 certificate = X509CertificateLoader.LoadCertificate(der);
            if (VerifySurvivors(certificate, round, set, signature))
            {
                valid.Add(index);
            }
        }
        if (valid.Count < threshold)
        {
            throw new InvalidDataException(
                $"consistency check: {valid.Count} of this participant's neighbourhood (itself included) signed the survivor set, fewer than the threshold {threshold}; no share is revealed");
        }
    }

    /// <summary>Signs an advertisement with the identity's ECDSA key (SHA-256, IEEE P1363 r || s).</summary>
    public static byte[] Sign(X509Certificate2 identity, RoundRef round, uint index, ReadOnlySpan<byte> encryptionKey, ReadOnlySpan<byte> maskKey)
    {
        ArgumentNullException.ThrowIfNull(identity);
        string name = identity.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        return SignBytes(identity, SignedBytes(round, index, name, encryptionKey, maskKey), "its SecAgg+ keys");
    }

    /// <summary>Whether <paramref name="signature"/> is the certificate's key's signature over the advertisement.</summary>
    public static bool Verify(X509Certificate2 certificate, RoundRef round, uint index, string clientId, ReadOnlySpan<byte> encryptionKey, ReadOnlySpan<byte> maskKey,
        ReadOnlySpan<byte> signature)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        return VerifyBytes(certificate, SignedBytes(round, index, clientId, encryptionKey, maskKey), signature);
    }

    /// <summary>
    /// Checks every neighbour of a roster as a participant receives it: the certificate chains to the federation CA
    /// with the client role and is not revoked (as far as <paramref name="trust"/> knows), names the participant the
    /// signed manifest lists at that index, and its key signed exactly these keys for this round. Throws
    /// <see cref="InvalidDataException"/> naming the neighbour and what failed: the participant then leaves the round
    /// before it deals a share to a key the coordinator may have substituted.
    /// </summary>
    public static void VerifyRoster(RoundManifest manifest, AdvertiseKeysResponse roster, FederationTrust trust)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(roster);
        ArgumentNullException.ThrowIfNull(trust);
        var names = new Dictionary<uint, string>();
        foreach (ParticipantRef participant in manifest.Participants)
        {
            names.TryAdd(participant.Index, participant.ClientId);
        }
        foreach (ParticipantKeys neighbour in roster.Neighbours)
        {
            uint index = neighbour.Participant?.Index ?? 0;
            if (!names.TryGetValue(index, out string? name))
            {
                throw new InvalidDataException($"the roster lists participant index {index}, which the manifest does not");
            }
            if (neighbour.Certificate.IsEmpty || neighbour.KeySignature.IsEmpty)
            {
                throw new InvalidDataException($"the roster's keys for {name} carry no certificate or signature; refusing unsigned keys");
            }
            X509Certificate2 certificate;
            try
            {
                certificate = X509CertificateLoader.LoadCertificate(neighbour.Certificate.Span);
            }
            catch (CryptographicException ex)
            {
                throw new InvalidDataException($"the roster's certificate for {name} does not parse: {ex.Message}", ex);
            }
            using (certificate)
            {
                if (!trust.TryValidateClient(certificate, out FederationIdentity? identity, out string reason))
                {
                    throw new InvalidDataException($"the roster's certificate for {name} is refused: {reason}");
                }
                if (identity!.Role != FederationRole.Client || !string.Equals(identity.Name, name, StringComparison.Ordinal))
                {
                    throw new InvalidDataException(
                        $"the roster's certificate at index {index} is {identity.Name}'s ({FederationRoleExtension.Name(identity.Role)}), not client {name}'s as the manifest says");
                }
                if (!Verify(certificate, manifest.Round, index, name, neighbour.EncryptionPublicKey.Span, neighbour.MaskPublicKey.Span, neighbour.KeySignature.Span))
                {
                    throw new InvalidDataException($"the roster's keys for {name} are not the ones {name} signed (substituted keys?)");
                }
            }
        }
    }

    // Both signatures: ECDSA with SHA-256, IEEE P1363 r || s (64 bytes for P-256).
    private static byte[] SignBytes(X509Certificate2 identity, byte[] data, string what)
    {
        using ECDsa key = identity.GetECDsaPrivateKey()
            ?? throw new InvalidOperationException($"the identity has no ECDSA private key to sign {what} with");
        return key.SignData(data, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }

    private static bool VerifyBytes(X509Certificate2 certificate, byte[] data, ReadOnlySpan<byte> signature)
    {
        using ECDsa? key = certificate.GetECDsaPublicKey();
        return key is not null && signature.Length == 64
            && key.VerifyData(data, signature, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }

    private static byte[] BigEndian(ulong value)
    {
        byte[] bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        return bytes;
    }

    // Every field behind its 4-byte big-endian length, so no two field lists give the same bytes; both messages start
    // with their label, the run and the round.
    private sealed class LengthPrefixed
    {
        private readonly MemoryStream _buffer = new();

        public LengthPrefixed(byte[] label, RoundRef round)
        {
            Add(label);
            Add(Encoding.UTF8.GetBytes(round.RunId));
            Add(BigEndian(round.Round));
        }

        public void Add(ReadOnlySpan<byte> value)
        {
            Span<byte> length = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(length, (uint)value.Length);
            _buffer.Write(length);
            _buffer.Write(value);
        }

        public byte[] ToArray() => _buffer.ToArray();
    }
}
