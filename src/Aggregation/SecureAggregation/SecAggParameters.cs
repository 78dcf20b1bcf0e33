using System.Collections.ObjectModel;

namespace Federated.Aggregation.SecureAggregation;

/// <summary>The public, agreed parameters of one SecAgg+ round; validated once when built.</summary>
public sealed record SecAggParameters
{
    private SecAggParameters(string runId, long round, IReadOnlyList<int> clientIds, int vectorLength, int bits, int degree, int threshold, ReadOnlyMemory<byte> graphSeed)
    {
        RunId = runId;
        Round = round;
        ClientIds = clientIds;
        VectorLength = vectorLength;
        Bits = bits;
        Degree = degree;
        Threshold = threshold;
        GraphSeed = graphSeed;
    }

    /// <summary>Run identifier, bound into every key derivation and ciphertext.</summary>
    public string RunId { get; }

    /// <summary>Round number, bound into every key derivation and ciphertext.</summary>
    public long Round { get; }

    /// <summary>Selected clients, ascending; ids are Shamir x-coordinates, so they are positive.</summary>
    public IReadOnlyList<int> ClientIds { get; }

    /// <summary>Vector length d.</summary>
    public int VectorLength { get; }

    /// <summary>Ring bit width b: inputs and the result live in Z_(2^b).</summary>
    public int Bits { get; }

    /// <summary>Neighbours per client k (n - 1 is the complete graph of Bonawitz et al. 2017).</summary>
    public int Degree { get; }

    /// <summary>Shamir threshold t: shares needed among a client's k neighbours plus itself.</summary>
    public int Threshold { get; }

    /// <summary>Public 32-byte seed from which every party derives the same neighbour graph.</summary>
    public ReadOnlyMemory<byte> GraphSeed { get; }

    /// <summary>Number of selected clients n.</summary>
    public int ClientCount => ClientIds.Count;

    /// <summary>True when every client neighbours every other.</summary>
    public bool IsCompleteGraph => Degree == ClientIds.Count - 1;

    /// <summary>Builds and validates parameters; throws ArgumentException naming the bad value and its range.</summary>
    public static SecAggParameters Create(string runId, long round, IEnumerable<int> clientIds, int vectorLength, int bits, int degree, int threshold, ReadOnlySpan<byte> graphSeed)
    {
        ArgumentException.ThrowIfNullOrEmpty(runId);
        ArgumentNullException.ThrowIfNull(clientIds);
        if (runId.Length > 256)
        {
            throw new ArgumentOutOfRangeException(nameof(runId), runId.Length, "runId must be at most 256 characters.");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(round);
        int[] ids = clientIds.Order().ToArray();
        if (ids.Length < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(clientIds), ids.Length, "at least 2 clients are needed.");
        }
        if (ids[0] <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(clientIds), ids[0], "client ids must be positive (they are Shamir x-coordinates).");
        }
        for (int i = 1; i < ids.Length; i++)
        {
            if (ids[i] == ids[i - 1])
            {
                throw new ArgumentException($"client id {ids[i]} appears twice.", nameof(clientIds));
            }
        }
        if (vectorLength < 1 || vectorLength > 1 << 30)
        {
            throw new ArgumentOutOfRangeException(nameof(vectorLength), vectorLength, "vectorLength must be between 1 and 2^30.");
        }
        RingVector.ValidateBits(bits);
        int n = ids.Length;
        if (degree < 1 || degree > n - 1)
        {
            throw new ArgumentOutOfRangeException(nameof(degree), degree, $"degree must be between 1 and n - 1 = {n - 1}.");
        }
        if (degree < n - 1 && degree % 2 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(degree), degree, "a degree below n - 1 must be even (Harary graph).");
        }
        if (threshold < 1 || threshold > degree + 1)
        {
            throw new ArgumentOutOfRangeException(nameof(threshold), threshold, $"threshold must be between 1 and degree + 1 = {degree + 1}.");
        }
        if (graphSeed.Length != MaskPrg.SeedBytes)
        {
            throw new ArgumentException($"graphSeed has {graphSeed.Length} bytes; it must have {MaskPrg.SeedBytes}.", nameof(graphSeed));
        }
        return new SecAggParameters(runId, round, new ReadOnlyCollection<int>(ids), vectorLength, bits, degree, threshold, graphSeed.ToArray());
    }

    /// <summary>
    /// Chooses (degree k, threshold t) for n clients, a tolerated dropout fraction and a corrupt fraction.
    /// </summary>
    /// <remarks>
    /// Rule (after Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS, the
    /// conditions on a client's neighbourhood in Sec. 4): with neighbours drawn at random, a client's corrupt
    /// neighbours are ~ Binomial(k, corrupt) and its surviving share holders (neighbours plus itself) ~
    /// Binomial(k + 1, 1 - dropout). Take the smallest even k and then the smallest t such that, union-bounded
    /// over the n clients, P[corrupt &gt;= t] &lt;= 2^-securityBits / n (the adversary never holds t shares) and
    /// P[survivors &lt; t] &lt;= 2^-correctnessBits / n (every needed secret is recoverable). When no k &lt; n - 1
    /// works, the complete graph is used with t = n - floor(dropout n) (at least floor(corrupt n) + 1).
    /// This omits Bell et al.'s graph-connectivity condition against partial-sum leakage, so k is smaller than
    /// Google FCP's table (k = 72, t = 24 at n = 1000, 5% corrupt, 33% dropout); pass k and t explicitly to
    /// <see cref="Create"/> to follow that table. With <paramref name="neighbourhoodMajority"/> every t is at least
    /// floor((k + 1) / 2) + 1, so that t &gt; (k + 1) / 2 holds on each neighbourhood (the condition every participant
    /// checks: two survivor sets told to different holders of one client's shares must overlap, Bonawitz et al. 2017,
    /// Sec. 4), and k grows until that many holders survive the dropout bound; the complete graph then keeps the rule above.
    /// </remarks>
    public static (int Degree, int Threshold) DeriveGraphParameters(
        int clientCount, double dropoutFraction, double corruptFraction, int securityBits = 40, int correctnessBits = 20, bool neighbourhoodMajority = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(clientCount, 2);
        if (!(dropoutFraction >= 0 && dropoutFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(dropoutFraction), dropoutFraction, "dropoutFraction must be in [0, 1).");
        }
        if (!(corruptFraction >= 0 && corruptFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(corruptFraction), corruptFraction, "corruptFraction must be in [0, 1).");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(securityBits, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(correctnessBits, 1);
        double log2n = Math.Log2(clientCount);
        double securityLog = -(securityBits + log2n) * Math.Log(2);
        double correctnessLog = -(correctnessBits + log2n) * Math.Log(2);
        for (int k = 2; k < clientCount - 1; k += 2)
        {
            for (int t = neighbourhoodMajority ? (k + 1) / 2 + 1 : 1; t <= k + 1; t++)
            {
                if (LogUpperTail(k, corruptFraction, t) > securityLog)
                {
                    continue;
                }
                // Smallest secure t found; it is the most tolerant of dropouts for this k.
                if (LogLowerTail(k + 1, 1 - dropoutFraction, t) <= correctnessLog)
                {
                    return (k, t);
                }
                break;
            }
        }
        int n = clientCount;
        int threshold = Math.Max(n - (int)Math.Floor(dropoutFraction * n), (int)Math.Floor(corruptFraction * n) + 1);
        return (n - 1, Math.Clamp(threshold, 1, n));
    }

    // log P[X >= t], X ~ Binomial(k, p), summed in log space so tiny tails do not underflow.
    internal static double LogUpperTail(int k, double p, int t)
    {
        if (t <= 0)
        {
            return 0;
        }
        if (t > k || p <= 0)
        {
            return double.NegativeInfinity;
        }
        return LogSum(Enumerable.Range(t, k - t + 1).Select(i => LogPmf(k, p, i)));
    }

    // log P[X < t], X ~ Binomial(k, p).
    internal static double LogLowerTail(int k, double p, int t)
    {
        if (t <= 0)
        {
            return double.NegativeInfinity;
        }
        if (t > k)
        {
            return 0;
        }
        if (p >= 1)
        {
            return double.NegativeInfinity;
        }
        return LogSum(Enumerable.Range(0, t).Select(i => LogPmf(k, p, i)));
    }

    private static double LogPmf(int k, double p, int i) =>
        LogChoose(k, i) + (i == 0 ? 0 : i * Math.Log(p)) + (k - i == 0 ? 0 : (k - i) * Math.Log(1 - p));

    private static double LogChoose(int k, int i)
    {
        double sum = 0;
        for (int j = 1; j <= i; j++)
        {
            sum += Math.Log(k - i + j) - Math.Log(j);
        }
        return sum;
    }

    private static double LogSum(IEnumerable<double> logs)
    {
        double[] values = logs.ToArray();
        double max = values.Max();
        if (double.IsNegativeInfinity(max))
        {
            return max;
        }
        return max + Math.Log(values.Sum(v => Math.Exp(v - max)));
    }
}
