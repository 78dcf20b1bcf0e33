using System.Security.Cryptography;

namespace Federated.EdgeClient.Transport;

/// <summary>
/// Exponential backoff with "equal jitter" (half fixed, half random): delay n is in [d/2, d] with
/// d = min(max, initial * 2^n), so retries spread out after an outage without ever collapsing to zero.
/// </summary>
internal sealed class ReconnectBackoff
{
    private readonly TimeSpan _initial;
    private readonly TimeSpan _maximum;
    private int _attempt;

    public ReconnectBackoff(TimeSpan initial, TimeSpan maximum)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(initial, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(maximum, initial);
        _initial = initial;
        _maximum = maximum;
    }

    public int Attempt => _attempt;

    /// <summary>The delay before the next attempt; each call moves one step further.</summary>
    public TimeSpan Next()
    {
        double ceiling = Math.Min(_maximum.TotalMilliseconds, _initial.TotalMilliseconds * Math.Pow(2, Math.Min(_attempt, 30)));
        _attempt++;
        int half = (int)Math.Max(1, ceiling / 2);
        // Jitter only desynchronises clients, but the project takes all randomness from the CSPRNG.
        return TimeSpan.FromMilliseconds(half + RandomNumberGenerator.GetInt32(half + 1));
    }

    /// <summary>Back to the first step after a success.</summary>
    public void Reset() => _attempt = 0;
}
