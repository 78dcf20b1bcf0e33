using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Google.Protobuf;

namespace Federated.EndToEnd.Tests;

public sealed class DistributedDpRoundTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Round_DistributedSkellamUnderSecAgg_DecodedMeanMatchesTrueMeanWithinNoise()
    {
        const int d = 200;
        string[] names = ["alice", "bob", "carol"];
        DSkellamPlan plan = DSkellamPlan.Calibrate(new DSkellamParameters(d, Bits: 32, ClipNorm: 1.0, NoiseMultiplier: 0.5, MaxClients: 3, MinClients: 2));
        byte[] rotationSeed = RandomNumberGenerator.GetBytes(32);
        var dp = new DpParameters
        {
            Mechanism = NoiseMechanism.DistributedSkellam,
            ClipNorm = 1.0,
            NoiseMultiplier = 0.5,
            Scale = plan.Scale,
            PerClientVariance = 2 * plan.LocalSkellamMu,
            RotationSeed = ByteString.CopyFrom(rotationSeed),
            Delta = 1e-6,
        };
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("dp-run", 1, names, plan.PaddedDimension, 32, Degree: 2, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(30)), new RoundInstructions(Dp: dp));
        // Updates of norm 0.8 (under the clip norm) sharing a common direction, so the mean is far from zero.
        float[] common = RandomUnit(d, 0.6f);
        Dictionary<string, float[]> updates = names.ToDictionary(n => n, _ => Add(common, RandomUnit(d, 0.2f)));

        await Task.WhenAll(names.Select(async name =>
        {
            using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, identity);
            await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
            var participant = new SecAggParticipant(connection, name);
            RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
            await participant.ParticipateAsync(manifest, (m, _) =>
            {
                // The client encodes with the rotation seed from the signed manifest, not from anywhere else.
                var encoder = new DSkellamEncoder(plan, m.Dp.RotationSeed.Span);
                return Task.FromResult(encoder.Encode(updates[name]).Values);
            }, CancellationToken.None);
        }));
        uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromSeconds(60));
        coordinator.Host.Rounds.Finish(round);

        float[] decoded = [.. new DSkellamDecoder(plan, rotationSeed).DecodeSum(sum).Select(v => v / names.Length)];
        float[] truth = new float[d];
        foreach (float[] u in updates.Values)
        {
            for (int i = 0; i < d; i++)
            {
                truth[i] += u[i] / names.Length;
            }
        }
        double error = Math.Sqrt(truth.Select((t, i) => Math.Pow(t - decoded[i], 2)).Sum());
        double meanNoise = plan.NoiseStdDevOfSum(names.Length) / names.Length;
        double truthNorm = Math.Sqrt(truth.Sum(t => (double)t * t));
        // The error is the planned noise (plus rounding): its L2 norm concentrates near sqrt(d) sigma.
        Assert.InRange(error, 0.3 * Math.Sqrt(d) * meanNoise, 2.0 * Math.Sqrt(d) * meanNoise + 0.05);
        Assert.True(truthNorm > 0.5, $"test vectors too small: {truthNorm}");
    }

    private static float[] RandomUnit(int d, float norm)
    {
        byte[] bytes = RandomNumberGenerator.GetBytes(4 * d);
        float[] v = [.. Enumerable.Range(0, d).Select(i => (BitConverter.ToUInt32(bytes, 4 * i) / (float)uint.MaxValue) - 0.5f)];
        float length = MathF.Sqrt(v.Sum(x => x * x));
        return [.. v.Select(x => x / length * norm)];
    }

    private static float[] Add(float[] a, float[] b) => [.. a.Select((x, i) => x + b[i])];
}
