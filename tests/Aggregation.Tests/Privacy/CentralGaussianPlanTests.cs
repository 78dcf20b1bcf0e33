using System.Text;
using Federated.Aggregation.Privacy;

namespace Federated.Aggregation.Tests.Privacy;

public sealed class CentralGaussianPlanTests
{
    private static AesCtrRandomSource Random(string name) => new("tests/central/" + name, Encoding.UTF8.GetBytes("fixed seed for reproducible tests"));

    [Fact]
    public void AddNoise_TenThousandWorstCaseInputs_NeverWrapAndDecodeExactly()
    {
        // 100 random plans x 100 adversarially aligned inputs each: every client puts its whole rounded norm on one
        // coordinate with one sign (the most any coordinate can reach), or a random integer vector at the norm bound.
        var generator = new Random(20261127);
        using var noiseBits = Random("property");
        int inputs = 0;
        for (int planIndex = 0; planIndex < 100; planIndex++)
        {
            int bits = generator.Next(16, 33);
            int n = generator.Next(1, 41);
            var p = new DSkellamParameters(Dimension: generator.Next(1, 65), bits, ClipNorm: 0.1 + 10 * generator.NextDouble(),
                NoiseMultiplier: 0.3 + 4 * generator.NextDouble(), MaxClients: n, MinClients: Math.Max(1, n / 2));
            CentralGaussianPlan plan;
            try
            {
                plan = CentralGaussianPlan.Calibrate(p);
            }
            catch (PrivacyPlanException ex) when (ex.Field == "bits")
            {
                continue; // a 16-bit ring cannot always hold 40 clients and their noise; refused, never calibrated to wrap
            }
            long limit = (1L << (bits - 1)) - 1;
            Assert.True(n * plan.ClientCoordinateBound + plan.NoiseBound <= limit, "calibration broke the hard bound");
            Assert.True(plan.ClientCoordinateBound * plan.ClientCoordinateBound <= plan.Quantizer.NormBoundSquared);
            int dPadded = plan.Quantizer.PaddedDimension;
            ulong mask = (1UL << bits) - 1;
            for (int trial = 0; trial < 100; trial++, inputs++)
            {
                var exact = new long[dPadded];
                var modular = new uint[dPadded];
                int hot = generator.Next(dPadded);
                int sign = generator.Next(2) == 0 ? -1 : 1;
                bool aligned = generator.Next(2) == 0;
                for (int c = 0; c < n; c++)
                {
                    long[] x = aligned ? Aligned(dPadded, hot, sign * plan.ClientCoordinateBound) : AtNormBound(generator, dPadded, plan.Quantizer.NormBoundSquared);
                    for (int i = 0; i < dPadded; i++)
                    {
                        exact[i] += x[i];
                        modular[i] = (uint)(((ulong)modular[i] + (ulong)x[i]) & mask);
                    }
                }
                uint[] noisy = modular.ToArray();
                plan.AddNoise(noisy, noiseBits);
                for (int i = 0; i < dPadded; i++)
                {
                    long noise = Centre((noisy[i] - (long)modular[i]) & (long)mask, bits);
                    long value = exact[i] + noise;
                    if (Math.Abs(value) > limit || value != Centre(noisy[i], bits))
                    {
                        Assert.Fail($"plan {planIndex}: coordinate {i} reached {value}, outside the {bits}-bit ring or decoded as {Centre(noisy[i], bits)}");
                    }
                }
            }
        }
        Assert.True(inputs >= 5_000, $"only {inputs} inputs ran; too many random plans were refused");
    }

    [Fact]
    public void EncodeAddNoiseDecode_FullNormClients_RecoverSumWithinNoise()
    {
        // The real client path: clip, rotate, scale, conditionally round without noise; the coordinator adds noise in the ring.
        var p = new DSkellamParameters(500, 32, ClipNorm: 1.0, NoiseMultiplier: 1.0, MaxClients: 5, MinClients: 3);
        CentralGaussianPlan plan = CentralGaussianPlan.Calibrate(p);
        Assert.Equal(0, plan.Quantizer.LocalSkellamMu);
        byte[] seed = Encoding.UTF8.GetBytes("round manifest seed: central test");
        using var random = Random("e2e");
        var encoder = new DSkellamEncoder(plan.Quantizer, seed, random);
        var sum = new uint[plan.Quantizer.PaddedDimension];
        var truth = new double[500];
        var generator = new Random(5);
        for (int c = 0; c < 5; c++)
        {
            float[] update = Enumerable.Range(0, 500).Select(_ => (float)(generator.NextDouble() - 0.5)).ToArray();
            double norm = Math.Sqrt(update.Sum(v => (double)v * v));
            for (int i = 0; i < 500; i++)
            {
                truth[i] += update[i] / Math.Max(1.0, norm);
            }
            uint[] values = encoder.Encode(update).Values;
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] += values[i]; // 32-bit ring: uint arithmetic wraps modulo 2^32
            }
        }
        plan.AddNoise(sum, random);
        float[] decoded = new DSkellamDecoder(plan.Quantizer, seed).DecodeSum(sum);
        // Noise per coordinate has standard deviation sqrt(sigma^2) / scale = z * Delta2 / scale, about z * C = 1.
        double sd = Math.Sqrt(plan.SigmaSquared) / plan.Quantizer.Scale;
        double meanSquaredError = Enumerable.Range(0, 500).Average(i => Math.Pow(decoded[i] - truth[i], 2));
        Assert.InRange(meanSquaredError, 0.7 * sd * sd, 1.3 * sd * sd);
    }

    [Theory]
    [InlineData(100UL, 1)]
    [InlineData(10_000UL, 64)]
    [InlineData(2_500_000UL, 1 << 20)]
    public void NoiseBoundFor_ExactTail_BelowTwoToMinus128AndNotFarAboveNeeded(ulong sigmaSquared, int dimension)
    {
        long bound = CentralGaussianPlan.NoiseBoundFor(sigmaSquared, dimension);
        double logTail = LogTailAtLeast(sigmaSquared, bound);
        Assert.True(Math.Log(dimension) + logTail <= -128 * Math.Log(2), $"tail {logTail} at {bound}");
        // The bound is within a few percent of the smallest T that the exact tail allows.
        double looser = LogTailAtLeast(sigmaSquared, (long)(0.97 * bound));
        Assert.True(Math.Log(dimension) + looser > -128 * Math.Log(2), $"bound {bound} is more than 3% above what is needed");
    }

    [Theory]
    [InlineData(1.0, 12345UL, "12345")]
    [InlineData(0.5, 10UL, "3")] // 2.5 rounds up
    [InlineData(0.1, 100UL, "2")] // 0.1 is a little above 1/10 as a double: 1.0000000000000001, rounds up to 2
    [InlineData(3.0, 7UL, "63")]
    public void SigmaSquaredFor_ExactCeiling(double z, ulong normBoundSquared, string expected)
    {
        Assert.Equal(expected, CentralGaussianPlan.SigmaSquaredFor(z, normBoundSquared).ToString());
    }

    [Fact]
    public void Calibrate_ScaleIsLargestThatKeepsTheHardBound()
    {
        var p = new DSkellamParameters(4096, 24, 1.0, 2.0, 50, 30);
        CentralGaussianPlan plan = CentralGaussianPlan.Calibrate(p);
        long limit = (1L << 23) - 1;
        Assert.True(50 * plan.ClientCoordinateBound + plan.NoiseBound <= limit);
        // One part in 10^6 more scale breaks it.
        CentralGaussianPlan larger = CentralGaussianPlan.Calibrate(p with { Bits = 25 });
        double scale = plan.Quantizer.Scale * (1 + 1e-6);
        double b = Math.Floor(DSkellamPlan.RoundedNormBoundSquared(scale, plan.Quantizer.PaddedDimension, p.Beta));
        long coordinate = (long)DiscreteGaussianSampler.FloorSqrt((ulong)b);
        long noise = CentralGaussianPlan.NoiseBoundFor((ulong)CentralGaussianPlan.SigmaSquaredFor(2.0, (ulong)b), plan.Quantizer.PaddedDimension);
        Assert.True(50 * coordinate + noise > limit);
        Assert.True(larger.Quantizer.Scale > 1.9 * plan.Quantizer.Scale);
    }

    [Fact]
    public void AddNoise_WrongLength_Throws()
    {
        CentralGaussianPlan plan = CentralGaussianPlan.Calibrate(new DSkellamParameters(10, 32, 1.0, 1.0, 3, 2));
        Assert.Throws<ArgumentException>(() => plan.AddNoise(new uint[3]));
    }

    private static long[] Aligned(int d, int hot, long value)
    {
        var x = new long[d];
        x[hot] = value;
        return x;
    }

    // A random integer vector with |x|^2 <= bound, pushed towards the bound.
    private static long[] AtNormBound(Random generator, int d, double normBoundSquared)
    {
        var direction = Enumerable.Range(0, d).Select(_ => generator.NextDouble() * 2 - 1).ToArray();
        double norm = Math.Sqrt(direction.Sum(v => v * v));
        double radius = Math.Sqrt(normBoundSquared);
        return direction.Select(v => (long)Math.Truncate(v / norm * radius)).ToArray();
    }

    private static long Centre(long value, int bits) => value >= 1L << (bits - 1) ? value - (1L << bits) : value;

    // ln P(|X| >= m) for X ~ N_Z(0, sigma^2), summed in log space from the exact pmf.
    private static double LogTailAtLeast(ulong sigmaSquared, long m)
    {
        double s2 = sigmaSquared;
        double sigma = Math.Sqrt(s2);
        double logZ = 0, logTail = double.NegativeInfinity;
        long reach = (long)(60 * sigma) + m + 10;
        double logZAccumulator = double.NegativeInfinity;
        for (long x = -reach; x <= reach; x++)
        {
            double lw = -(double)x * x / (2 * s2);
            logZAccumulator = PrivacyMath.LogAdd(logZAccumulator, lw);
            if (Math.Abs(x) >= m)
            {
                logTail = PrivacyMath.LogAdd(logTail, lw);
            }
        }
        logZ = logZAccumulator;
        return logTail - logZ;
    }
}
