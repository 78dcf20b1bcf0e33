using System.Globalization;
using System.Text.Json;
using Federated.Aggregation.Privacy;

namespace Federated.Benchmarks;

/// <summary>
/// Times the RDP and PLD accountants at T = 10,000 rounds, the DSkellam encoding of d = 4,194,304, and the central
/// mechanism's exact discrete Gaussian noise on a modular sum of the same length.
/// </summary>
internal sealed class PrivacyBenchmark : IBenchmarkSuite
{
    public string Name => "privacy";

    public Task<int> RunAsync(BenchmarkOptions options)
    {
        int repeats = options.Quick ? 1 : Math.Max(1, options.Repeats);
        long rounds = options.GetInt("rounds", 10_000);
        int dimension = options.GetInt("dimension", options.Quick ? 1 << 18 : 4_194_304);
        const double q = 0.01, z = 1.0, delta = 1e-5;

        double rdpEpsilon = 0, pldEpsilon = 0;
        double rdpSeconds = Measure.MedianSeconds(repeats, () =>
        {
            var accountant = new RdpAccountant();
            accountant.ComposeSubsampledGaussian(q, z, rounds);
            rdpEpsilon = accountant.GetEpsilon(delta).Epsilon;
        });
        double pldSeconds = Measure.MedianSeconds(repeats, () => pldEpsilon = PldAccountant.Epsilon(q, z, rounds, delta).Epsilon);

        var plan = DSkellamPlan.Calibrate(new DSkellamParameters(dimension, 32, ClipNorm: 1.0, NoiseMultiplier: z, MaxClients: 100, MinClients: 50));
        byte[] seed = new byte[32];
        var random = new Random(1);
        float[] update = new float[dimension];
        for (int i = 0; i < dimension; i++)
        {
            update[i] = (float)(random.NextDouble() - 0.5);
        }
        var encoder = new DSkellamEncoder(plan, seed);
        DSkellamEncoding? encoded = null;
        double encodeSeconds = Measure.MedianSeconds(repeats, () => encoded = encoder.Encode(update));
        var decoder = new DSkellamDecoder(plan, seed);
        double decodeSeconds = Measure.MedianSeconds(repeats, () => decoder.DecodeSum(encoded!.Values));

        // The central mechanism: 100 clients at z = 1 in a 32-bit ring; the coordinator's noise on one round's sum.
        CentralGaussianPlan central = PrivacyPlan.Create(new PrivacyPlanParameters(PrivacyMechanism.CentralGaussian, dimension, 100, 50, 32,
            ClipNorm: 1.0, NoiseMultiplier: z, Rounds: 1, Delta: delta)).Central!;
        var modularSum = new uint[central.Quantizer.PaddedDimension];
        double centralNoiseSeconds = Measure.MedianSeconds(repeats, () => central.AddNoise(modularSum));
        double planSeconds = Measure.MedianSeconds(repeats, () => PrivacyPlan.NoiseForEpsilon(new PrivacyPlanParameters(
            PrivacyMechanism.DistributedSkellam, dimension, 100, 50, 32, ClipNorm: 1.0, NoiseMultiplier: z, Rounds: rounds, Delta: delta), 8.0));

        var result = new Dictionary<string, object>
        {
            ["suite"] = Name,
            ["repeats"] = repeats,
            ["rounds"] = rounds,
            ["sampling_rate"] = q,
            ["noise_multiplier"] = z,
            ["delta"] = delta,
            ["rdp_epsilon"] = rdpEpsilon,
            ["rdp_seconds"] = rdpSeconds,
            ["pld_epsilon"] = pldEpsilon,
            ["pld_seconds"] = pldSeconds,
            ["dskellam_dimension"] = dimension,
            ["dskellam_bits"] = 32,
            ["dskellam_encode_seconds"] = encodeSeconds,
            ["dskellam_decode_seconds"] = decodeSeconds,
            ["dskellam_rounding_attempts"] = encoded!.RoundingAttempts,
            ["dskellam_scale"] = plan.Scale,
            ["dskellam_local_mu"] = plan.LocalSkellamMu,
            ["central_noise_seconds"] = centralNoiseSeconds,
            ["central_noise_sigma_squared"] = central.SigmaSquared,
            ["central_noise_ns_per_coordinate"] = centralNoiseSeconds * 1e9 / modularSum.Length,
            ["noise_search_distributed_seconds"] = planSeconds,
        };
        if (options.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            foreach (var (key, value) in result)
            {
                Console.WriteLine($"{key,-28} {Convert.ToString(value, CultureInfo.InvariantCulture)}");
            }
        }
        return Task.FromResult(0);
    }
}
