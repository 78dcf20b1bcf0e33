namespace Federated.Aggregation.Privacy;

/// <summary>
/// One holder's record-level DP-SGD work in one round: its own record count, the expected batch, the local steps and
/// the noise multiplier and clip norm the run plan fixes. The unit is one record (add/remove of one record, the record
/// count treated as public, as Abadi et al. 2016 and Opacus state it).
/// </summary>
public sealed record RecordLevelRound(double NoiseMultiplier, double MaxGradNorm, int ExpectedBatch, int Steps, int Records)
{
    /// <summary>The exact inclusion probability of each record in each step (<see cref="RecordLevelPricing.SamplingRate"/>).</summary>
    public double SamplingRate => RecordLevelPricing.SamplingRate(ExpectedBatch, Records);

    /// <summary>
    /// Null when the holder can price the round; otherwise the first problem, naming the parameter, its value and the
    /// allowed range (a non-positive or non-finite noise or clip, an expected batch above the record count).
    /// </summary>
    public string? Problem()
    {
        if (!(NoiseMultiplier > 0) || !double.IsFinite(NoiseMultiplier) || NoiseMultiplier > PrivacyPlanParameters.MaxNoiseMultiplier)
        {
            return $"record noise multiplier {NoiseMultiplier} must be a finite number in (0, {PrivacyPlanParameters.MaxNoiseMultiplier}]";
        }
        if (!(MaxGradNorm > 0) || !double.IsFinite(MaxGradNorm))
        {
            return $"record clip norm {MaxGradNorm} must be a finite number > 0";
        }
        if (Steps < 1)
        {
            return $"local steps {Steps} must be at least 1";
        }
        if (Records < 1)
        {
            return "this holder has no records to train on";
        }
        if (ExpectedBatch < 1 || ExpectedBatch > Records)
        {
            return $"the expected batch of {ExpectedBatch} records must be in 1..{Records}, this holder's record count (the sampling rate would be above 1)";
        }
        return null;
    }
}

/// <summary>
/// The one pricing of record-level DP-SGD, shared by the trainer's running epsilon, the edge ledger and the simulation:
/// the Poisson-subsampled Gaussian RDP per step, composed over a round's local steps and across rounds per order.
/// </summary>
public static class RecordLevelPricing
{
    private const double TwoTo53 = 9007199254740992.0;

    /// <summary>
    /// q = expected batch / records, rounded up to the multiple of 2^-53 the Poisson sampler draws at (a record is kept when
    /// a uniform 53-bit integer falls below ceil(q 2^53)), so the charge is never for a rate below the one used.
    /// </summary>
    public static double SamplingRate(int expectedBatch, int records)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(expectedBatch);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(records);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(expectedBatch, records);
        return InclusionRate((double)expectedBatch / records);
    }

    /// <summary>The rate a Poisson sampler asked for <paramref name="rate"/> keeps each record with: ceil(rate 2^53) / 2^53.</summary>
    public static double InclusionRate(double rate)
    {
        if (!(rate > 0 && rate <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(rate), rate, "the sampling rate must be in (0, 1]");
        }
        return Math.Ceiling(rate * TwoTo53) / TwoTo53;
    }

    /// <summary>The 53-bit threshold below which a uniform draw keeps a record at <paramref name="rate"/>.</summary>
    public static ulong InclusionThreshold(double rate) => (ulong)(InclusionRate(rate) * TwoTo53);

    /// <summary>RDP per order of one round: <paramref name="round"/>'s steps of the subsampled Gaussian at its rate.</summary>
    public static double[] RoundRdp(RecordLevelRound round, IReadOnlyList<double> orders)
    {
        ArgumentNullException.ThrowIfNull(round);
        ArgumentNullException.ThrowIfNull(orders);
        if (round.Problem() is { } problem)
        {
            throw new ArgumentException(problem, nameof(round));
        }
        // Poisson-subsampled Gaussian RDP per step (Mironov, Talwar and Zhang 2019, as Opacus computes it), T steps compose additively (Abadi et al. 2016; Mironov 2017, Prop. 1).
        double[] rdp = RdpAnalysis.SubsampledGaussian(round.SamplingRate, round.NoiseMultiplier, orders);
        for (int i = 0; i < rdp.Length; i++)
        {
            rdp[i] *= round.Steps;
        }
        return rdp;
    }

    /// <summary>Epsilon at <paramref name="delta"/> of <paramref name="rounds"/> composed per order (each with its own rate and steps).</summary>
    public static PrivacySpent Epsilon(IEnumerable<RecordLevelRound> rounds, double delta, IReadOnlyList<double>? orders = null)
    {
        ArgumentNullException.ThrowIfNull(rounds);
        IReadOnlyList<double> list = orders ?? RdpOrders.Default;
        var total = new double[list.Count];
        bool any = false;
        var cache = new Dictionary<RecordLevelRound, double[]>();
        foreach (RecordLevelRound round in rounds)
        {
            if (!cache.TryGetValue(round, out double[]? rdp))
            {
                rdp = RoundRdp(round, list);
                cache[round] = rdp;
            }
            for (int i = 0; i < total.Length; i++)
            {
                total[i] += rdp[i];
            }
            any = true;
        }
        // Nothing released from the records: nothing spent.
        return any ? RdpAnalysis.Epsilon(list, total, delta) : new PrivacySpent(0, delta, null);
    }
}
