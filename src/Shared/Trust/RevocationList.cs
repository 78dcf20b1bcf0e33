using System.Formats.Asn1;
using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Trust;

/// <summary>
/// The federation's certificate revocation list (crl.pem, RFC 5280 section 5), signed by the CA. .NET builds CRLs
/// (CertificateRevocationListBuilder) but on Linux its chain engine only consults CRLs fetched from a
/// distribution point into its own cache, so the coordinator reads this file itself: it verifies the CA's
/// ECDSA signature over tbsCertList and checks the leaf serial against the revoked set after the chain is built.
/// </summary>
public static class RevocationList
{
    public const string FileName = "crl.pem";
    private const string EcdsaWithSha256Oid = "1.2.840.10045.4.3.2";
    private const string PemLabel = "X509 CRL";

    /// <summary>The serial of a certificate as a number, so that encodings with and without a leading zero agree.</summary>
    public static BigInteger Serial(ReadOnlySpan<byte> bigEndian) => new(bigEndian, isUnsigned: false, isBigEndian: true);

    /// <summary>Reads a PEM CRL, verifies its signature against <paramref name="ca"/> and returns the revoked serials.</summary>
    public static IReadOnlySet<BigInteger> ReadVerified(string pem, X509Certificate2 ca, out BigInteger crlNumber, out byte[] der)
    {
        ArgumentNullException.ThrowIfNull(pem);
        ArgumentNullException.ThrowIfNull(ca);
        PemFields fields = PemEncoding.Find(pem);
        if (!pem.AsSpan()[fields.Label].SequenceEqual(PemLabel))
        {
            throw new CryptographicException($"the revocation list is not a PEM '{PemLabel}'");
        }
        der = Convert.FromBase64String(pem[fields.Base64Data]);
        return ReadVerifiedDer(der, ca, out crlNumber);
    }

    /// <summary>
    /// Verifies a DER CRL (as it travels in a round manifest) against <paramref name="ca"/> and returns the revoked
    /// serials; whoever carried it, only the CA's signature makes it count.
    /// </summary>
    /// <exception cref="CryptographicException">The list is malformed, not signed by the CA, or not issued by it.</exception>
    public static IReadOnlySet<BigInteger> ReadVerifiedDer(byte[] der, X509Certificate2 ca, out BigInteger crlNumber)
    {
        ArgumentNullException.ThrowIfNull(der);
        ArgumentNullException.ThrowIfNull(ca);
        try
        {
            var top = new AsnReader(der, AsnEncodingRules.DER);
            var outer = top.ReadSequence();
            top.ThrowIfNotEmpty();
            ReadOnlyMemory<byte> tbs = outer.ReadEncodedValue();
            AsnReader algorithm = outer.ReadSequence();
            string oid = algorithm.ReadObjectIdentifier();
            if (oid != EcdsaWithSha256Oid)
            {
                throw new CryptographicException($"the revocation list is signed with {oid}; only ecdsa-with-SHA256 ({EcdsaWithSha256Oid}) is accepted");
            }
            byte[] signature = outer.ReadBitString(out int unusedBits);
            outer.ThrowIfNotEmpty();
            using ECDsa key = ca.GetECDsaPublicKey() ?? throw new CryptographicException("the federation CA has no ECDSA key");
            if (unusedBits != 0 || !key.VerifyData(tbs.Span, signature, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence))
            {
                throw new CryptographicException("the revocation list's signature does not verify against the federation CA");
            }

            // TBSCertList: version, signature, issuer, thisUpdate, nextUpdate?, revokedCertificates?, [0] extensions?
            AsnReader body = new AsnReader(tbs, AsnEncodingRules.DER).ReadSequence();
            if (body.PeekTag().HasSameClassAndValue(Asn1Tag.Integer))
            {
                body.ReadInteger();
            }
            body.ReadSequence();
            ReadOnlyMemory<byte> issuer = body.ReadEncodedValue();
            if (!issuer.Span.SequenceEqual(ca.SubjectName.RawData))
            {
                throw new CryptographicException("the revocation list's issuer is not the federation CA");
            }
            body.ReadEncodedValue(); // thisUpdate
            var revoked = new HashSet<BigInteger>();
            while (body.HasData)
            {
                Asn1Tag tag = body.PeekTag();
                if (tag.HasSameClassAndValue(Asn1Tag.UtcTime) || tag.HasSameClassAndValue(Asn1Tag.GeneralizedTime))
                {
                    body.ReadEncodedValue(); // nextUpdate: the file is local, so its freshness is the file itself
                }
                else if (tag.HasSameClassAndValue(Asn1Tag.Sequence))
                {
                    AsnReader entries = body.ReadSequence();
                    while (entries.HasData)
                    {
                        AsnReader entry = entries.ReadSequence();
                        revoked.Add(Serial(entry.ReadIntegerBytes().Span));
                    }
                }
                else
                {
                    body.ReadEncodedValue(); // [0] crlExtensions (the CRL number is read by the builder below)
                }
            }
            CertificateRevocationListBuilder.Load(der, out crlNumber);
            return revoked;
        }
        catch (Exception ex) when (ex is AsnContentException or ArgumentException)
        {
            throw new CryptographicException($"the revocation list is malformed: {ex.Message}", ex);
        }
    }

    /// <summary>The PEM form of a DER CRL (what crl.pem holds).</summary>
    public static string ToPem(ReadOnlySpan<byte> der) => PemEncoding.WriteString(PemLabel, der);

    /// <summary>
    /// Adds <paramref name="serials"/> to the CRL in <paramref name="directory"/> (creating it), signs it with the CA and
    /// replaces the file atomically, so a coordinator reading it never sees half a list. Returns the new CRL number.
    /// </summary>
    public static BigInteger Revoke(string directory, X509Certificate2 caWithKey, IReadOnlyCollection<byte[]> serials, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(caWithKey);
        ArgumentNullException.ThrowIfNull(serials);
        string path = Path.Combine(directory, FileName);
        CertificateRevocationListBuilder builder;
        BigInteger number;
        var already = new HashSet<BigInteger>();
        if (File.Exists(path))
        {
            // Verified before extending: a forged list must never be re-signed by the CA.
            already.UnionWith(ReadVerified(File.ReadAllText(path), caWithKey, out number, out byte[] der));
            builder = CertificateRevocationListBuilder.Load(der, out _);
        }
        else
        {
            builder = new CertificateRevocationListBuilder();
            number = BigInteger.Zero;
        }
        foreach (byte[] serial in serials)
        {
            if (already.Add(Serial(serial)))
            {
                builder.AddEntry(serial, now, X509RevocationReason.CessationOfOperation);
            }
        }
        DateTimeOffset nextUpdate = caWithKey.NotAfter.ToUniversalTime();
        byte[] signed = builder.Build(caWithKey, number + 1, nextUpdate, HashAlgorithmName.SHA256, thisUpdate: now);
        string temporary = Path.Combine(directory, $".{FileName}.{Guid.NewGuid():N}");
        PkiFiles.WritePublic(temporary, PemEncoding.WriteString(PemLabel, signed));
        File.Move(temporary, path, overwrite: true);
        return number + 1;
    }
}
