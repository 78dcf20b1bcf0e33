using System.Security.Cryptography;
using Federated.Coordinator.State;

namespace Federated.Coordinator.Rounds;

/// <summary>
/// Chooses a round's participants among the clients available now (seen within three heartbeats, not already invited)
/// that may serve the run's population (bound to it, or to none yet: a client belongs to one population for life, see
/// <see cref="ClientStore"/>): a uniformly random fixed-size set, or a Poisson sample. Randomness comes from the CSPRNG only.
/// </summary>
internal sealed class ClientSelection(ClientStore clients, RoundRegistry rounds, CoordinatorOptions options, OrchestratorSettings settings, TimeProvider time)
{
    /// <summary>How often the pool is read again while too few clients are available.</summary>
    private static readonly TimeSpan s_poll = TimeSpan.FromMilliseconds(200);

    /// <summary>A uniformly random set of <paramref name="count"/> clients among those available now (CSPRNG shuffle).</summary>
    public async Task<IReadOnlyList<string>> SelectAsync(int count, string population, CancellationToken cancellationToken, Action<int, int>? waiting = null)
    {
        string[] online = await AvailableAsync(count, population, cancellationToken, waiting);
        RandomNumberGenerator.Shuffle(online.AsSpan());
        return online[..count];
    }

    /// <summary>
    /// Poisson sampling: once at least <paramref name="threshold"/> clients are available (fewer could never make a
    /// round), each available client is included independently with probability <paramref name="rate"/>.
    /// </summary>
    public async Task<IReadOnlyList<string>> SampleAsync(double rate, int threshold, string population, CancellationToken cancellationToken, Action<int, int>? waiting = null)
    {
        string[] pool = await AvailableAsync(threshold, population, cancellationToken, waiting);
        return PoissonSample(pool, rate);
    }

    /// <summary>Each member kept independently with probability <paramref name="rate"/>: a uniform 53-bit draw from the CSPRNG below the rate.</summary>
    public static IReadOnlyList<string> PoissonSample(IReadOnlyList<string> pool, double rate)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (!(rate > 0 && rate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), rate, "the sampling rate must be in (0, 1]");
        }
        Span<byte> draw = stackalloc byte[8];
        var sample = new List<string>();
        foreach (string client in pool)
        {
            RandomNumberGenerator.Fill(draw);
            double u = (BitConverter.ToUInt64(draw) >> 11) * (1.0 / (1UL << 53));
            if (u < rate)
            {
                sample.Add(client);
            }
        }
        return sample;
    }

    /// <summary>How many clients of the population are available (seen recently, not in a round) right now.</summary>
    public int AvailableNow(string population) => Online(population).Length;

    private string[] Online(string population)
    {
        TimeSpan window = TimeSpan.FromSeconds(3 * options.HeartbeatIntervalSeconds);
        return [.. clients.List(window)
            .Where(c => c.Available && (c.Population is null || c.Population == population) && rounds.InvitationFor(c.ClientId) is null)
            .Select(c => c.ClientId)];
    }

    /// <summary>
    /// The clients of the population available now, once there are at least <paramref name="count"/>; a timeout after
    /// the selection timeout. <paramref name="waiting"/> hears (available, needed) whenever the count it waits on changes.
    /// </summary>
    private async Task<string[]> AvailableAsync(int count, string population, CancellationToken cancellationToken, Action<int, int>? waiting = null)
    {
        DateTimeOffset giveUp = time.GetUtcNow() + settings.SelectionTimeout;
        int reported = -1;
        while (true)
        {
            string[] online = Online(population);
            if (online.Length >= count)
            {
                return online;
            }
            if (online.Length != reported)
            {
                reported = online.Length;
                waiting?.Invoke(online.Length, count);
            }
            if (time.GetUtcNow() > giveUp)
            {
                throw new TimeoutException($"only {online.Length} of the {count} clients a round needs were available within {settings.SelectionTimeout}");
            }
            await Task.Delay(s_poll, time, cancellationToken);
        }
    }
}
