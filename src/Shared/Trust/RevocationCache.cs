using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Trust;

/// <summary>
/// The revoked serials of crl.pem, reloaded whenever the file's timestamp or length changes (checked on every
/// handshake and call, a single stat), so `pki revoke` takes effect without a restart. A CRL that exists but does
/// not verify fails closed: every client is refused until it is fixed, rather than trusting a forged list. So does a
/// CRL that disappears, or is replaced by one with a lower CRL number, after a list was loaded: deleting or
/// restoring crl.pem must not silently clear revocations (this process remembers the highest number it loaded).
/// </summary>
public sealed class RevocationCache : IRevocationCheck
{
    private readonly string _path;
    private readonly X509Certificate2 _ca;
    private readonly Lock _lock = new();
    private Snapshot _current = new(DateTime.MinValue, -1, new HashSet<BigInteger>(), null, [], null);
    private BigInteger? _highest;

    public RevocationCache(string path, X509Certificate2 ca)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(ca);
        _path = path;
        _ca = ca;
    }

    /// <summary>True when the certificate must be refused: its serial is revoked, or the CRL cannot be trusted.</summary>
    public bool IsRefused(X509Certificate2 certificate, out string reason)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        Snapshot snapshot = Refresh();
        if (snapshot.Error is not null)
        {
            reason = $"the revocation list '{_path}' cannot be trusted ({snapshot.Error}); refusing every client until it is fixed";
            return true;
        }
        if (snapshot.Revoked.Contains(RevocationList.Serial(certificate.SerialNumberBytes.Span)))
        {
            reason = $"certificate '{certificate.Subject}' (serial {certificate.SerialNumber}) is revoked";
            return true;
        }
        reason = "";
        return false;
    }

    /// <summary>
    /// The current verified CRL (DER) for round manifests, or empty when there is none or it cannot be trusted (edges
    /// that have seen a CRL then decline the round: they fail closed too).
    /// </summary>
    public byte[] CurrentDer()
    {
        Snapshot snapshot = Refresh();
        return snapshot.Error is null ? snapshot.Der : [];
    }

    private Snapshot Refresh()
    {
        var info = new FileInfo(_path);
        DateTime stamp = info.Exists ? info.LastWriteTimeUtc : DateTime.MinValue;
        long length = info.Exists ? info.Length : -1;
        Snapshot current = Volatile.Read(ref _current);
        if (current.Stamp == stamp && current.Length == length)
        {
            return current;
        }
        lock (_lock)
        {
            current = _current;
            if (current.Stamp == stamp && current.Length == length)
            {
                return current;
            }
            Snapshot next;
            if (!info.Exists)
            {
                next = _highest is { } seen
                    ? new Snapshot(stamp, length, new HashSet<BigInteger>(), $"it was removed after CRL number {seen} was loaded", [], null)
                    : new Snapshot(stamp, length, new HashSet<BigInteger>(), null, [], null);
            }
            else
            {
                try
                {
                    IReadOnlySet<BigInteger> revoked = RevocationList.ReadVerified(File.ReadAllText(_path), _ca, out BigInteger number, out byte[] der);
                    if (_highest is { } seen && number < seen)
                    {
                        next = new Snapshot(stamp, length, new HashSet<BigInteger>(), $"its CRL number {number} is older than number {seen} already loaded (a rollback)", [], null);
                    }
                    else
                    {
                        _highest = number;
                        next = new Snapshot(stamp, length, revoked, null, der, number);
                    }
                }
                catch (Exception ex) when (ex is CryptographicException or IOException or FormatException or UnauthorizedAccessException)
                {
                    next = new Snapshot(stamp, length, new HashSet<BigInteger>(), ex.Message, [], null);
                }
            }
            Volatile.Write(ref _current, next);
            return next;
        }
    }

    private sealed record Snapshot(DateTime Stamp, long Length, IReadOnlySet<BigInteger> Revoked, string? Error, byte[] Der, BigInteger? Number);
}
