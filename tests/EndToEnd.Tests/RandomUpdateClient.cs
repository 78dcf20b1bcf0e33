using System.Collections.Concurrent;
using System.Security.Cryptography;
using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Wire;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// An in-process edge client without training: it registers, heartbeats, and takes part in every round it is invited
/// to with a fixed random update of its own (so sums can be checked), encoded with the plan the manifest fixes (as
/// `edge-client run` recomputes it). Like `edge-client run`, one lost round does not end it, and it reconnects with backoff by itself when
/// the coordinator goes away. <see cref="BeforeStage"/> lets a test hold it or make it vanish at a SecAgg+ stage.
/// </summary>
internal sealed class RandomUpdateClient(string name, string identityPath, string caPath, Uri coordinator)
{
    private readonly ConcurrentDictionary<int, float[]> _updates = new();

    public string Name { get; } = name;

    /// <summary>Every manifest this client accepted, in order.</summary>
    public ConcurrentQueue<RoundManifest> Manifests { get; } = new();

    /// <summary>Length d of the lora_B this client last updated.</summary>
    public int Dimension { get; private set; }

    /// <summary>The rounds whose Unmask call this client completed.</summary>
    public ConcurrentQueue<uint> Completed { get; } = new();

    /// <summary>Runs before each stage message of a round (see <see cref="SecAggParticipant.BeforeStage"/>).</summary>
    public Func<RoundManifest, RoundStage, CancellationToken, Task>? BeforeStage { get; init; }

    /// <summary>The update this client submits in every round for a lora_B of length d: norm 0.8 around a shared direction.</summary>
    public float[] Update(int d) => _updates.GetOrAdd(d, n =>
    {
        float[] common = Direction(n, "common");
        float[] own = Direction(n, Name);
        return [.. common.Select((c, i) => 0.6f * c + 0.2f * own[i])];
    });

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(identityPath, caPath);
        var registration = new RegisterRequest { ClientVersion = "test", Device = "cpu" };
        while (!cancellationToken.IsCancellationRequested)
        {
            // MaxRetries 0: heartbeats and registration retry with backoff until the coordinator answers again.
            using var connection = new CoordinatorConnection(coordinator, identity, new ConnectionOptions { MaxRetries = 0, MaximumBackoff = TimeSpan.FromSeconds(2) });
            RoundManifest? current = null;
            var participant = new SecAggParticipant(connection, Name)
            {
                BeforeStage = (stage, ct) => BeforeStage is { } hook && current is not null ? hook(current, stage, ct) : Task.CompletedTask,
            };
            try
            {
                await new EdgeSession(connection, registration).RunAsync(async (invitation, ct) =>
                {
                    try
                    {
                        current = await participant.FetchManifestAsync(invitation, ct);
                        Manifests.Enqueue(current);
                        byte[] content = await AdapterDownload.DownloadAsync(connection, current.GlobalAdapter, ct);
                        int d = checked((int)GlobalAdapterBlob.Read(content).Tensors.OnlyB().ElementCount);
                        Dimension = d;
                        // The plan the edge recomputes from the manifest (central: the hard-bound scale, no client noise).
                        DSkellamPlan plan = PrivacyPlan.Create(ManifestPrivacy.Parameters(current, d)).Quantizer;
                        float[] update = Update(d);
                        await participant.ParticipateAsync(current, (m, _) => Task.FromResult(new DSkellamEncoder(plan, m.Dp.RotationSeed.Span).Encode(update).Values), ct);
                        Completed.Enqueue(current.Round.Round);
                    }
                    catch (Exception ex) when (ex is RpcException or InvalidDataException or DroppedOutException && !ct.IsCancellationRequested)
                    {
                        // This round went on (or failed) without us; the next invitation is a new chance.
                    }
                }, cancellationToken);
            }
            catch (RpcException) when (!cancellationToken.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);
            }
        }
    }

    private static float[] Direction(int d, string label)
    {
        byte[] seed = SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(label));
        var random = new Random(BitConverter.ToInt32(seed));
        float[] v = [.. Enumerable.Range(0, d).Select(_ => (float)(random.NextDouble() - 0.5))];
        float norm = MathF.Sqrt(v.Sum(x => x * x));
        return [.. v.Select(x => x / norm)];
    }
}

/// <summary>Thrown by a test hook to make a participant vanish at a stage.</summary>
internal sealed class DroppedOutException(string message) : Exception(message);
