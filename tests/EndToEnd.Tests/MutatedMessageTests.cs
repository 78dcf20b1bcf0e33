using System.Security.Cryptography;
using Federated.Coordinator.Pki;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.Core;
using Grpc.Health.V1;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Issue 8's randomized test: valid messages of every edge RPC, taken from a real round, mutated with a fixed seed
/// (bit flips, truncation, field values, random lengths) and thrown at the coordinator while honest rounds run.
/// </summary>
public sealed class MutatedMessageTests(CoordinatorFixture coordinator, Xunit.Abstractions.ITestOutputHelper output) : IClassFixture<CoordinatorFixture>
{
    private const string Service = "federated.v1.EdgeService";
    private const int MutationsPerMessage = 12;
    private static readonly string[] s_honest = ["alice", "bob", "carol"];

    // Statuses a hostile message may get: refusals, the end of a (sacrificial) round, or success where a mutation is
    // still a valid message. Never INTERNAL, UNKNOWN or UNAVAILABLE (the server failing or gone).
    private static readonly HashSet<StatusCode> s_expected =
    [
        StatusCode.OK, StatusCode.InvalidArgument, StatusCode.FailedPrecondition, StatusCode.PermissionDenied,
        StatusCode.ResourceExhausted, StatusCode.NotFound, StatusCode.OutOfRange, StatusCode.DeadlineExceeded, StatusCode.Aborted,
    ];

    private static readonly Marshaller<byte[]> s_raw = Marshallers.Create(b => b, b => b);

    [Fact]
    public async Task EdgeRpcs_MutatedMessages_NoInternalErrorsAndConcurrentHonestRoundsReleaseExactSums()
    {
        string[] fuzzers = ["dave", "erin", "frank"];
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            pki.IssueIdentity(coordinator.Pki, "frank", FederationRole.Client, password: null);
        }
        var random = new Random(20261126);
        string adapter = coordinator.Host.Adapters.Put(RandomNumberGenerator.GetBytes(3000), "fuzz-adapter", 0);

        // Valid messages of the stage RPCs, from a real round among the fuzzing identities.
        var valid = new List<(string Method, IMessage Message)>
        {
            ("Register", new RegisterRequest { ClientVersion = "1.0", Device = "cpu", ApproximateExamples = 64 }),
            ("Heartbeat", new HeartbeatRequest { Available = true }),
            ("DownloadAdapter", new DownloadAdapterRequest { Sha256 = adapter, Offset = 1000 }),
        };
        using (ScriptedRound source = await ScriptedRound.StartAsync(coordinator, "fuzz-source", 1, fuzzers))
        {
            Assert.Equal(source.ExpectedSum(), await source.RunAsync());
            ScriptedParticipant p = source.First;
            valid.Add(("GetRoundManifest", new GetRoundManifestRequest { Round = p.Round }));
            valid.Add(("DeclineRound", new DeclineRoundRequest { Round = p.Round, Reason = DeclineReason.Policy, Detail = "epsilon too high" }));
            valid.Add(("AdvertiseKeys", p.Advertised!));
            valid.Add(("ShareKeys", p.Shared!));
            valid.Add(("Unmask", p.Unmasked!));
            valid.Add(("UploadMaskedInput", p.Uploaded![0]));
        }

        using var stop = new CancellationTokenSource();
        Task<int> honest = Task.Run(() => HonestRoundsAsync(stop.Token));
        var outcomes = new List<(string Case, StatusCode Status)>();
        try
        {
            // One sacrificial round per stage: the mutations of that stage's messages arrive while it is open, so they
            // reach the deepest checks (the caller is a live participant and the round and stage are right).
            int number = 1;
            foreach (ScriptedStage target in Enum.GetValues<ScriptedStage>())
            {
                using ScriptedRound sacrificial = await ScriptedRound.StartAsync(coordinator, "fuzz", number++, fuzzers);
                try
                {
                    await sacrificial.RunAsync(beforeStage: async stage =>
                    {
                        if (stage != target)
                        {
                            return;
                        }
                        ScriptedParticipant p = sacrificial.First;
                        IMessage current = stage switch
                        {
                            ScriptedStage.AdvertiseKeys => p.AdvertiseRequest(),
                            ScriptedStage.ShareKeys => p.Shared!,
                            ScriptedStage.MaskedInput => p.Uploaded![0],
                            _ => p.Unmasked!,
                        };
                        string method = stage switch
                        {
                            ScriptedStage.AdvertiseKeys => "AdvertiseKeys",
                            ScriptedStage.ShareKeys => "ShareKeys",
                            ScriptedStage.MaskedInput => "UploadMaskedInput",
                            _ => "Unmask",
                        };
                        foreach ((string Method, IMessage Message) seed in valid.Append((method, current)).Append((method, current)))
                        {
                            for (int i = 0; i < MutationsPerMessage; i++)
                            {
                                outcomes.Add(await ThrowAsync(p.Connection, seed.Method, seed.Message, random, seed.Method == method ? p.Uploaded : null));
                            }
                        }
                    });
                }
                catch (RpcException ex)
                {
                    // A mutation that was still valid took the participant's place; its honest message is then refused.
                    outcomes.Add(($"honest {target} after mutations", ex.StatusCode));
                }
                catch (Federated.Aggregation.SecureAggregation.SecureAggregationException)
                {
                    // An accepted mutation (a corrupted share ciphertext) makes an honest neighbour's session refuse it.
                }
            }
        }
        finally
        {
            await stop.CancelAsync();
        }
        int honestRounds = await honest;

        // The server is still up and serving: health, and one more honest round after the storm.
        using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, alice);
        HealthCheckResponse health = await new Health.HealthClient(connection.Channel).CheckAsync(new HealthCheckRequest(), connection.Call(default));
        using ScriptedRound after = await ScriptedRound.StartAsync(coordinator, "after-fuzz", 1, s_honest);
        uint[] sum = await after.RunAsync();

        foreach (var group in outcomes.GroupBy(o => (o.Case.Split(' ')[0], o.Status)).OrderBy(g => g.Key.Item1))
        {
            output.WriteLine($"{group.Key.Item1} {group.Key.Status}: {group.Count()}");
        }
        output.WriteLine($"honest rounds during the mutations: {honestRounds}");
        Assert.True(outcomes.Count >= 400, $"{outcomes.Count} mutated calls");
        Assert.DoesNotContain(outcomes, o => o.Status is StatusCode.Internal or StatusCode.Unknown);
        Assert.All(outcomes, o => Assert.True(s_expected.Contains(o.Status), $"{o.Case}: {o.Status}"));
        // Most mutations must be refused, or the test would not be exercising validation at all.
        Assert.True(outcomes.Count(o => o.Status != StatusCode.OK) > outcomes.Count / 2, "fewer than half of the mutations were refused");
        Assert.True(honestRounds >= 1, "no honest round completed while the mutations were thrown");
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        Assert.Equal(after.ExpectedSum(), sum);
    }

    /// <summary>Runs honest rounds back to back until stopped; each must release the exact sum. Returns how many ran.</summary>
    private async Task<int> HonestRoundsAsync(CancellationToken stop)
    {
        int completed = 0;
        while (!stop.IsCancellationRequested || completed == 0)
        {
            using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "honest", completed + 1, s_honest);
            Assert.Equal(round.ExpectedSum(), await round.RunAsync());
            completed++;
        }
        return completed;
    }

    /// <summary>Sends one mutation of <paramref name="message"/> to <paramref name="method"/> as raw bytes and returns its status.</summary>
    private static async Task<(string Case, StatusCode Status)> ThrowAsync(
        CoordinatorConnection connection, string method, IMessage message, Random random, IReadOnlyList<Federated.Protos.V1.MaskedInputChunk>? upload)
    {
        (string kind, byte[] payload) = Mutate(message, random);
        string name = $"{method} {kind}";
        CallInvoker invoker = connection.Channel.CreateCallInvoker();
        // Long polls that a mutation got accepted into would wait for the stage to close; a short deadline ends them.
        var options = new CallOptions(deadline: DateTime.UtcNow.AddSeconds(5));
        try
        {
            switch (method)
            {
                case "UploadMaskedInput":
                {
                    var call = new Method<byte[], byte[]>(MethodType.ClientStreaming, Service, method, s_raw, s_raw);
                    using AsyncClientStreamingCall<byte[], byte[]> stream = invoker.AsyncClientStreamingCall(call, null, options);
                    try
                    {
                        await stream.RequestStream.WriteAsync(payload);
                        // Sometimes follow with the rest of a real upload, so later-chunk checks are reached too.
                        if (upload is not null && random.Next(2) == 0)
                        {
                            foreach (Federated.Protos.V1.MaskedInputChunk chunk in upload.Skip(1))
                            {
                                await stream.RequestStream.WriteAsync(random.Next(8) == 0 ? Mutate(chunk, random).Payload : chunk.ToByteArray());
                            }
                        }
                        await stream.RequestStream.CompleteAsync();
                    }
                    catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
                    {
                        // The server ended the call early; its status is in the response.
                    }
                    await stream.ResponseAsync;
                    break;
                }
                case "DownloadAdapter":
                {
                    var call = new Method<byte[], byte[]>(MethodType.ServerStreaming, Service, method, s_raw, s_raw);
                    using AsyncServerStreamingCall<byte[]> stream = invoker.AsyncServerStreamingCall(call, null, options, payload);
                    while (await stream.ResponseStream.MoveNext(CancellationToken.None))
                    {
                    }
                    break;
                }
                default:
                {
                    var call = new Method<byte[], byte[]>(MethodType.Unary, Service, method, s_raw, s_raw);
                    await invoker.AsyncUnaryCall(call, null, options, payload);
                    break;
                }
            }
            return (name, StatusCode.OK);
        }
        catch (RpcException ex)
        {
            return ($"{name}: {ex.Status.Detail}", ex.StatusCode);
        }
    }

    /// <summary>One random mutation: bit flips, truncation, a field set to a random value, a random-length field, or random bytes.</summary>
    private static (string Kind, byte[] Payload) Mutate(IMessage message, Random random)
    {
        byte[] bytes = message.ToByteArray();
        switch (random.Next(6))
        {
            case 0:
            {
                byte[] flipped = (byte[])bytes.Clone();
                for (int i = random.Next(1, 4); i > 0 && flipped.Length > 0; i--)
                {
                    flipped[random.Next(flipped.Length)] ^= (byte)(1 << random.Next(8));
                }
                return ("bit flips", flipped);
            }
            case 1:
                return ("truncated", bytes[..random.Next(bytes.Length + 1)]);
            case 2:
            case 3:
            {
                IMessage copy = message.Descriptor.Parser.ParseFrom(bytes);
                string field = MutateField(copy, random, depth: 0);
                return ($"field {field}", copy.ToByteArray());
            }
            case 4:
            {
                // A valid message followed by an unknown field and then garbage of random length.
                byte[] tail = new byte[random.Next(1, 64)];
                random.NextBytes(tail);
                return ("trailing bytes", [.. bytes, 0xF8, 0x07, .. tail]);
            }
            default:
            {
                byte[] noise = new byte[random.Next(0, 512)];
                random.NextBytes(noise);
                return ("random bytes", noise);
            }
        }
    }

    /// <summary>Sets one field (possibly nested or repeated) of <paramref name="message"/> to a hostile value; returns its path.</summary>
    private static string MutateField(IMessage message, Random random, int depth)
    {
        IList<FieldDescriptor> fields = message.Descriptor.Fields.InFieldNumberOrder();
        FieldDescriptor field = fields[random.Next(fields.Count)];
        IFieldAccessor accessor = field.Accessor;
        if (field.IsRepeated)
        {
            var list = (System.Collections.IList)accessor.GetValue(message);
            int choice = random.Next(4);
            if (choice == 0 || list.Count == 0)
            {
                list.Clear();
                return field.Name + "[] cleared";
            }
            int index = random.Next(list.Count);
            if (choice == 1)
            {
                list.Add(list[index] is IMessage m ? m.Descriptor.Parser.ParseFrom(m.ToByteArray()) : list[index]);
                return $"{field.Name}[{index}] repeated";
            }
            if (choice == 2)
            {
                list.RemoveAt(index);
                return $"{field.Name}[{index}] removed";
            }
            if (list[index] is IMessage element && depth < 3)
            {
                return $"{field.Name}[{index}].{MutateField(element, random, depth + 1)}";
            }
            list[index] = RandomValue(field, list[index], random);
            return $"{field.Name}[{index}] changed";
        }
        if (field.FieldType == FieldType.Message)
        {
            if (accessor.GetValue(message) is IMessage nested && depth < 3 && random.Next(3) != 0)
            {
                return $"{field.Name}.{MutateField(nested, random, depth + 1)}";
            }
            accessor.Clear(message);
            return field.Name + " cleared";
        }
        accessor.SetValue(message, RandomValue(field, accessor.GetValue(message), random));
        return field.Name + " changed";
    }

    private static object RandomValue(FieldDescriptor field, object? current, Random random) => field.FieldType switch
    {
        FieldType.UInt32 => random.Next(5) switch { 0 => 0u, 1 => 1u, 2 => uint.MaxValue, 3 => unchecked(Convert.ToUInt32(current ?? 0u) + 1), _ => (uint)random.Next() },
        FieldType.UInt64 => random.Next(5) switch { 0 => 0UL, 1 => 1UL, 2 => ulong.MaxValue, 3 => Convert.ToUInt64(current ?? 0UL) + 4, _ => (ulong)random.NextInt64() },
        FieldType.Bool => random.Next(2) == 0,
        FieldType.Enum => random.Next(-2, 10),
        FieldType.String => random.Next(4) switch
        {
            0 => "",
            1 => new string('x', random.Next(1, 400)),
            2 => "tab\tand\u0000nul",
            _ => "run-" + random.Next(),
        },
        FieldType.Bytes => RandomBytes(current as ByteString, random),
        FieldType.Double => random.Next(4) switch { 0 => double.NaN, 1 => double.PositiveInfinity, 2 => double.NegativeInfinity, _ => -1.0 },
        _ => current ?? throw new InvalidOperationException($"no mutation for field type {field.FieldType}"),
    };

    private static ByteString RandomBytes(ByteString? current, Random random)
    {
        int length = random.Next(4) switch
        {
            0 => 0,
            1 => Math.Max(0, (current?.Length ?? 1) - 1),
            2 => (current?.Length ?? 0) + 1,
            _ => random.Next(0, 2048),
        };
        byte[] bytes = new byte[length];
        random.NextBytes(bytes);
        return ByteString.CopyFrom(bytes);
    }
}
