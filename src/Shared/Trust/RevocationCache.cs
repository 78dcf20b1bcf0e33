using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Federated.Trust;

/// <summary>
/// The revoked serials of crl.pem, reloaded whenever the file's timestamp or length changes (checked on every
/// handshake and call, a single stat), so `pki revoke` takes effect without a restart. A CRL that exists but does
/// not verify fails closed: every client is refused until it is fixed, rather than trusting a forged list.
/// </summary>
public sealed class RevocationCache : IRevocationCheck
{
    private readonly string _path;
    private readonly X509Certificate2 _ca;
    private readonly Lock _lock = new();
    private Snapshot _current = new(DateTime.MinValue, -1, new HashSet<BigInteger>(), null);

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
                next = new Snapshot(stamp, length, new HashSet<BigInteger>(), null);
            }
            else
            {
                try
                {
                    next = new Snapshot(stamp, length, RevocationList.ReadVerified(File.ReadAllText(_path), _ca, out _, out _), null);
                }
                catch (Exception ex) when (ex is CryptographicException or IOException or FormatException or UnauthorizedAccessException)
                {
                    next = new Snapshot(stamp, length, new HashSet<BigInteger>(), ex.Message);
                }
            }
            Volatile.Write(ref _current, next);
            return next;
        }
    }

    private sealed record Snapshot(DateTime Stamp, long Length, IReadOnlySet<BigInteger> Revoked, string? Error);
}
