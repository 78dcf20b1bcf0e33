using System.Text;
using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class DSkellamTests
{
    private static readonly byte[] s_manifestSeed = Encoding.UTF8.GetBytes("round manifest seed: run 7 round 3");

    private static AesCtrRandomSource Random(string name) => new("tests/" + name, Encoding.UTF8.GetBytes("fixed seed for reproducible tests"));

    private static float[] RandomUpdate(Random random, int d, double norm)
    {
        var v = new float[d];
        double sq = 0;
        for (int i = 0; i < d; i++)
        {
            v[i] = (float)(random.NextDouble() * 2 - 1);
            sq += v[i] * v[i];
        }
        double f = norm / Math.Sqrt(sq);
        for (int i = 0; i < d; i++)
        {
            v[i] = (float)(v[i] * f);
        }
        return v;
    }

    [Theory]
    [InlineData(1000)]
    [InlineData(1024)]
    [InlineData(1)]
    public void HadamardRotation_ForwardThenInverse_ReturnsInputAndKeepsNorm(int d)
    {
        var rotation = new HadamardRotation(d, s_manifestSeed);
        float[] x = RandomUpdate(new Random(1), d, 3.0);
        var rotated = new double[rotation.PaddedDimension];
        rotation.Forward(x, rotated);
        Assert.Equal(3.0, Math.Sqrt(rotated.Sum(v => v * v)), 1e-5);
        var back = new float[d];
        new HadamardRotation(d, s_manifestSeed).Inverse(rotated, back);
        for (int i = 0; i < d; i++)
        {
            Assert.Equal(x[i], back[i], 1e-5);
        }
    }

    [Fact]
    public void HadamardRotation_DifferentSeed_GivesDifferentRotation()
    {
        float[] x = RandomUpdate(new Random(2), 64, 1.0);
        var a = new double[64];
        var b = new double[64];
        new HadamardRotation(64, s_manifestSeed).Forward(x, a);
        byte[] other = (byte[])s_manifestSeed.Clone();
        other[0] ^= 1;
        new HadamardRotation(64, other).Forward(x, b);
        Assert.NotEqual(a, b);
    }

    [Fact]
    public void L2Clipping_LargeUpdate_ScaledToClipNormAndNormReported()
    {
        float[] a = [3, 0], b = [0, 4];
        double norm = L2Clipping.ClipInPlace([a, b], 1.0);
        Assert.Equal(5.0, norm, 1e-12);
        Assert.Equal(1.0, L2Clipping.Norm([a, b]), 1e-6);
        float[] small = [0.1f, 0.2f];
        L2Clipping.ClipInPlace(small, 1.0);
        Assert.Equal([0.1f, 0.2f], small);
        Assert.Throws<ArgumentException>(() => L2Clipping.ClipInPlace([float.NaN], 1.0));
    }

    [Theory]
    [InlineData(16, 1024, 8, 4)]
    [InlineData(20, 5000, 10, 5)]
    [InlineData(32, 4_194_304, 100, 50)]
    public void Calibrate_Scale_IsLargestThatKeepsKStdDevsInsideTheRing(int bits, int d, int maxClients, int minClients)
    {
        var p = new DSkellamParameters(d, bits, ClipNorm: 1.0, NoiseMultiplier: 1.0, maxClients, minClients);
        DSkellamPlan plan = DSkellamPlan.Calibrate(p);
        double limit = Math.Pow(2, bits - 1);
        Assert.True(p.WrapStdDevs * plan.AggregateStdDev <= limit);
        // Maximal: a slightly larger scale breaks the wrap bound or the Poisson-mean cap.
        bool atWrapLimit = p.WrapStdDevs * Math.Sqrt(DSkellamPlan.AggregateVariance(p, plan.PaddedDimension, plan.Scale * (1 + 1e-9))) > limit * (1 - 1e-9);
        bool atMuCap = plan.LocalSkellamMu > DSkellamPlan.MaxSkellamMu * (1 - 1e-8);
        Assert.True(atWrapLimit || atMuCap);
        Assert.True(plan.LocalSkellamMu <= DSkellamPlan.MaxSkellamMu * (1 + 1e-12));
        Assert.Equal(2 * Math.Exp(-8), plan.PerCoordinateWrapBound, 1e-15);
        // The Gaussian part of the Skellam RDP is exactly a / (2 z^2): noise is z times the integer sensitivity.
        double[] rdp = plan.RdpPerRound([2.0], Adjacency.ZeroOut);
        Assert.True(rdp[0] >= 2.0 / 2 && rdp[0] < 1.01);
    }

    [Fact]
    public void Calibrate_RingTooSmallForDimension_ThrowsNamingBits()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => DSkellamPlan.Calibrate(new DSkellamParameters(4_194_304, 16, 1.0, 1.0, 1000, 10)));
        Assert.Contains("bits", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => DSkellamPlan.Calibrate(new DSkellamParameters(10, 33, 1.0, 1.0, 2, 1)));
    }

    [Theory]
    [InlineData(4.0)]
    [InlineData(2.0)]
    public void Encode_WorstCaseAlignedUpdates_WrapRateWithinBound(double k)
    {
        // All clients send the same full-norm update, the worst case for the signal term of the bound.
        const int d = 1024, n = 8;
        var p = new DSkellamParameters(d, 16, 1.0, 1.0, n, 4, WrapStdDevs: k);
        DSkellamPlan plan = DSkellamPlan.Calibrate(p);
        float[] update = RandomUpdate(new Random(3), d, 1.0);
        long half = 1L << 15;
        int wraps = 0, coordinates = 0;
        using var random = Random("wrap" + k);
        var encoder = new DSkellamEncoder(plan, s_manifestSeed, random);
        for (int trial = 0; trial < 4; trial++)
        {
            var sum = new long[plan.PaddedDimension];
            for (int c = 0; c < n; c++)
            {
                long[] x = encoder.EncodeToIntegers(update, out _, out _);
                for (int i = 0; i < sum.Length; i++)
                {
                    sum[i] += x[i];
                }
            }
            wraps += sum.Count(v => v >= half || v < -half);
            coordinates += sum.Length;
        }
        double bound = plan.PerCoordinateWrapBound * coordinates;
        Assert.True(wraps <= bound + 3 * Math.Sqrt(bound) + 1, $"{wraps} wraps in {coordinates} coordinates; bound {bound:F1}");
    }

    [Fact]
    public void EncodeSumDecode_SixClients_RecoversSumWithPlannedNoiseVariance()
    {
        const int d = 2000, n = 6, t = 4;
        var p = new DSkellamParameters(d, 32, ClipNorm: 1.0, NoiseMultiplier: 1.0, MaxClients: n, MinClients: t);
        DSkellamPlan plan = DSkellamPlan.Calibrate(p);
        using var random = Random("e2e");
        var encoder = new DSkellamEncoder(plan, s_manifestSeed, random);
        var generator = new Random(4);
        var trueSum = new double[d];
        var modularSum = new uint[plan.PaddedDimension];
        for (int c = 0; c < n; c++)
        {
            // One client exceeds the clip norm and must be clipped to 1.
            double norm = c == 0 ? 5.0 : 0.8;
            float[] update = RandomUpdate(generator, d, norm);
            DSkellamEncoding encoded = encoder.Encode(update);
            Assert.Equal(norm, encoded.NormBeforeClipping, 1e-4);
            Assert.Equal(plan.PaddedDimension, encoded.Values.Length);
            double factor = Math.Min(1.0, 1.0 / encoded.NormBeforeClipping);
            for (int i = 0; i < d; i++)
            {
                trueSum[i] += update[i] * factor;
            }
            for (int i = 0; i < modularSum.Length; i++)
            {
                modularSum[i] += encoded.Values[i]; // SecAgg's sum modulo 2^32
            }
        }
        float[] decoded = new DSkellamDecoder(plan, s_manifestSeed).DecodeSum(modularSum);
        double mean = 0, sq = 0;
        for (int i = 0; i < d; i++)
        {
            double e = decoded[i] - trueSum[i];
            mean += e;
            sq += e * e;
        }
        mean /= d;
        double variance = sq / d - mean * mean;
        double planned = Math.Pow(plan.NoiseStdDevOfSum(n), 2);
        // Rounding adds at most n/4 integer units of variance per coordinate on top of the Skellam noise.
        double roundingMax = n / 4.0 / (plan.Scale * plan.Scale);
        Assert.True(Math.Abs(mean) < 6 * Math.Sqrt(planned / d), $"mean error {mean}");
        Assert.True(variance >= planned * (1 - 6 * Math.Sqrt(2.0 / d)), $"variance {variance} below planned {planned}");
        Assert.True(variance <= (planned + roundingMax) * (1 + 6 * Math.Sqrt(2.0 / d)), $"variance {variance} above planned {planned}");
        // With C = 1 and z = 1 the noise on the sum of n of t-threshold clients is about z C sqrt(n / t).
        Assert.Equal(Math.Sqrt(1.5), plan.NoiseStdDevOfSum(n), 0.05);
    }

    [Fact]
    public void Encode_SmallRing_ValuesStayInsideTheRing()
    {
        var plan = DSkellamPlan.Calibrate(new DSkellamParameters(300, 20, 1.0, 0.8, 5, 3));
        using var random = Random("ring");
        DSkellamEncoding e = new DSkellamEncoder(plan, s_manifestSeed, random).Encode(RandomUpdate(new Random(5), 300, 1.0));
        Assert.All(e.Values, v => Assert.True(v < 1u << 20));
        Assert.InRange(e.RoundingAttempts, 1, 100);
        Assert.Throws<ArgumentException>(() => new DSkellamEncoder(plan, s_manifestSeed, random).Encode(new float[299]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DSkellamDecoder(plan, s_manifestSeed).DecodeSum(Enumerable.Repeat(1u << 20, plan.PaddedDimension).ToArray()));
    }

    [Fact]
    public void Encode_NoiseMultiplierZero_QuantizesWithoutNoiseAndSumDecodesWithinRounding()
    {
        // z = 0 is the central mechanism's quantizer: clients add no noise, the coordinator adds Gaussian noise later.
        const int d = 300, n = 3;
        var plan = DSkellamPlan.Calibrate(new DSkellamParameters(d, 32, 1.0, 0.0, n, 2));
        using var random = Random("central");
        var updates = Enumerable.Range(0, n).Select(i => RandomUpdate(new Random(40 + i), d, 0.9)).ToArray();
        var modularSum = new uint[plan.PaddedDimension];
        foreach (float[] u in updates)
        {
            uint[] values = new DSkellamEncoder(plan, s_manifestSeed, random).Encode(u).Values;
            for (int i = 0; i < values.Length; i++)
            {
                modularSum[i] = unchecked(modularSum[i] + values[i]);
            }
        }

        float[] decoded = new DSkellamDecoder(plan, s_manifestSeed).DecodeSum(modularSum);

        Assert.Equal(0, plan.LocalSkellamMu);
        // Only stochastic rounding is left (at most n/4 integer units of variance per coordinate, i.e. sqrt(n/4)/scale),
        // plus float32 rounding of values near 1 in the decoder.
        double bound = 6 * Math.Sqrt(n / 4.0) / plan.Scale + 1e-6;
        Assert.All(Enumerable.Range(0, d), i => Assert.InRange(decoded[i] - updates.Sum(u => u[i]), -bound, bound));
        Assert.InRange(plan.DecodedL2Sensitivity, 1.0, 1.0 + 1e-3);
        Assert.Throws<InvalidOperationException>(() => plan.RdpPerRound(RdpOrders.Default, Adjacency.ReplaceOne));
        Assert.Throws<ArgumentOutOfRangeException>(() => DSkellamPlan.Calibrate(new DSkellamParameters(d, 32, 1.0, -0.1, n, 2)));
    }

    [Fact]
    public void Encode_ConditionalRounding_IntegerNormNeverAboveTheFlooredBound()
    {
        // A small scale makes rounding matter: scaled norm 4 in 16 dimensions, bound floor(16 + 4 + sqrt(2 ln(1/beta)) (4 + 2)) = 26.
        var p = new DSkellamParameters(16, 32, ClipNorm: 1.0, NoiseMultiplier: 0, MaxClients: 2, MinClients: 1);
        DSkellamPlan plan = DSkellamPlan.WithScale(p, 4.0);
        Assert.Equal(26, plan.NormBoundSquared);
        Assert.Equal(Math.Sqrt(26), plan.L2Sensitivity);
        using var random = Random("norm");
        var encoder = new DSkellamEncoder(plan, s_manifestSeed, random);
        var generator = new Random(6);
        int redraws = 0;
        for (int trial = 0; trial < 2000; trial++)
        {
            long[] x = encoder.EncodeToIntegers(RandomUpdate(generator, 16, 1.0), out _, out int attempts);
            redraws += attempts - 1;
            Assert.True(x.Sum(v => v * v) <= 26, $"trial {trial}: |x|^2 = {x.Sum(v => v * v)}");
        }
        Assert.True(redraws > 0, "no rounding was ever redrawn; the bound is not being exercised");
    }
}
