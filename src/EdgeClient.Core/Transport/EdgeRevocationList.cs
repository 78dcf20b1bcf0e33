using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Trust;

namespace Federated.EdgeClient.Transport;

/// <summary>Why a round's CRL was refused: the rule (crl_rollback, crl_missing, crl_invalid) and one line naming what is wrong.</summary>
public sealed record RevocationRefusal(string Rule, string Message);

/// <summary>
/// The newest CA-signed CRL this edge has seen (from round manifests), kept in <see cref="FileName"/> beside the
/// ledger so that it survives restarts. CRL numbers only increase: an older list is refused (crl_rollback), and once a
/// list was seen a manifest without one is refused (crl_missing), so a coordinator cannot make the edge forget a
/// revocation by deleting or restoring its crl.pem. Certificates are checked against the newest list.
/// </summary>
public sealed class EdgeRevocationList : IRevocationCheck
{
    /// <summary>The file beside the edge's ledger: the newest CRL seen, as PEM (its number is inside, under the CA's signature).</summary>
    public const string FileName = "federation-crl.pem";

    public const string RollbackRule = "crl_rollback";
    public const string MissingRule = "crl_missing";
    public const string InvalidRule = "crl_invalid";
    public const string RevokedRule = "certificate_revoked";
    public const string ExpiredRule = "certificate_expired";

    /// <summary>Largest CRL accepted from a manifest (a CRL entry is about 40 bytes: room for some 25,000 revocations).</summary>
    public const int MaxCrlBytes = 1 << 20;

    private readonly X509Certificate2 _ca;
    private readonly string? _path;
    private readonly Lock _lock = new();
    private Current? _current;

    private EdgeRevocationList(X509Certificate2 ca, string? path, Current? current)
    {
        _ca = ca;
        _path = path;
        _current = current;
    }

    /// <summary>The number of the newest CRL seen; null before the first.</summary>
    public BigInteger? Number => Volatile.Read(ref _current)?.Number;

    /// <summary>
    /// Opens the list kept at <paramref name="path"/> (none yet when the file does not exist).
    /// </summary>
    /// <param name="ca">The federation CA the CRL must be signed by; owned by the caller.</param>
    /// <exception cref="CryptographicException">The file exists but does not hold a CRL signed by <paramref name="ca"/> (fail closed: it is not ignored).</exception>
    public static EdgeRevocationList Open(string path, X509Certificate2 ca)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(ca);
        if (!File.Exists(path))
        {
            return new EdgeRevocationList(ca, path, null);
        }
        try
        {
            IReadOnlySet<BigInteger> revoked = RevocationList.ReadVerified(File.ReadAllText(path), ca, out BigInteger number, out byte[] der);
            return new EdgeRevocationList(ca, path, new Current(number, revoked, der));
        }
        catch (Exception ex) when (ex is CryptographicException or FormatException or ArgumentException)
        {
            throw new CryptographicException($"the revocation list '{path}' does not verify against the federation CA ({ex.Message}); remove it only if you know why it changed", ex);
        }
    }

    /// <summary>A list that is not persisted (one connection's lifetime): rollback and removal are still refused within it.</summary>
    public static EdgeRevocationList InMemory(X509Certificate2 ca)
    {
        ArgumentNullException.ThrowIfNull(ca);
        return new EdgeRevocationList(ca, null, null);
    }

    /// <summary>
    /// Takes a round manifest's CRL (DER, empty when the manifest carries none): verified against the CA, its number
    /// at least the newest seen. A newer list replaces the kept one (on disk first). Returns null when accepted.
    /// </summary>
    public RevocationRefusal? Accept(ReadOnlySpan<byte> crlDer)
    {
        lock (_lock)
        {
            Current? current = _current;
            if (crlDer.IsEmpty)
            {
                return current is null ? null : new RevocationRefusal(MissingRule,
                    $"the manifest carries no revocation list, but this edge has seen CRL number {current.Number}; a coordinator cannot drop revocations");
            }
            if (crlDer.Length > MaxCrlBytes)
            {
                return new RevocationRefusal(InvalidRule, $"the manifest's revocation list is {crlDer.Length} bytes; at most {MaxCrlBytes} are accepted");
            }
            byte[] der = crlDer.ToArray();
            IReadOnlySet<BigInteger> revoked;
            BigInteger number;
            try
            {
                revoked = RevocationList.ReadVerifiedDer(der, _ca, out number);
            }
            catch (CryptographicException ex)
            {
                return new RevocationRefusal(InvalidRule, $"the manifest's revocation list was refused: {ex.Message}");
            }
            if (current is not null)
            {
                if (number < current.Number)
                {
                    return new RevocationRefusal(RollbackRule, $"the manifest's CRL number {number} is older than number {current.Number} this edge has seen; CRL numbers only increase");
                }
                if (number == current.Number)
                {
                    return der.AsSpan().SequenceEqual(current.Der) ? null : new RevocationRefusal(RollbackRule,
                        $"the manifest's CRL number {number} differs from the list of the same number this edge has seen; a changed list must have a higher number");
                }
            }
            if (_path is not null)
            {
                Persist(_path, der);
            }
            Volatile.Write(ref _current, new Current(number, revoked, der));
            return null;
        }
    }

    /// <summary>True when the certificate's serial is on the newest CRL seen.</summary>
    public bool IsRefused(X509Certificate2 certificate, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        Current? current = Volatile.Read(ref _current);
        if (current is not null && current.Revoked.Contains(RevocationList.Serial(certificate.SerialNumberBytes.Span)))
        {
            reason = $"certificate '{certificate.Subject}' (serial {certificate.SerialNumber}) is revoked by CRL number {current.Number}";
            return true;
        }
        reason = "";
        return false;
    }

    // Written beside the final file and moved over it, so a crash never leaves half a list (which would fail closed at the next start).
    private static void Persist(string path, byte[] der)
    {
        string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string temporary = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}");
        PkiFiles.WritePublic(temporary, RevocationList.ToPem(der));
        File.Move(temporary, path, overwrite: true);
    }

    private sealed record Current(BigInteger Number, IReadOnlySet<BigInteger> Revoked, byte[] Der);
}
