using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Issue 8's bad messages over real mutual TLS: each gets its exact gRPC status while an honest round of three
/// runs on the same coordinator, and that round still releases the exact sum of the honest inputs.
/// </summary>
public sealed class BadMessageTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly string[] s_honest = ["alice", "bob", "carol"];

    [Fact]
    public async Task StageCalls_WrongStage_FailedPreconditionAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "wrong-stage", 1, s_honest);
        ScriptedParticipant first = round.First;
        var refused = new List<(string Case, StatusCode Status)>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage == ScriptedStage.AdvertiseKeys)
            {
                refused.Add(("share keys during advertise", await Status(() => first.Connection.Edge.ShareKeysAsync(new ShareKeysRequest { Round = first.Round }, first.Connection.Call(default)).ResponseAsync)));
                refused.Add(("upload during advertise", await Status(() => ScriptedParticipant.Upload(first.Connection, [FirstChunk(first, new byte[4])]))));
                refused.Add(("unmask during advertise", await Status(() => first.Connection.Edge.UnmaskAsync(new UnmaskRequest { Round = first.Round }, first.Connection.Call(default)).ResponseAsync)));
            }
            else if (stage == ScriptedStage.Unmask)
            {
                refused.Add(("advertise during unmask", await Status(() => first.Connection.Edge.AdvertiseKeysAsync(first.Advertised!, first.Connection.Call(default)).ResponseAsync)));
                refused.Add(("share keys during unmask", await Status(() => first.Connection.Edge.ShareKeysAsync(first.Shared!, first.Connection.Call(default)).ResponseAsync)));
                refused.Add(("decline during unmask", await Status(() => first.Connection.Edge.DeclineRoundAsync(
                    new DeclineRoundRequest { Round = first.Round, Reason = DeclineReason.Busy }, first.Connection.Call(default)).ResponseAsync)));
            }
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(6, refused.Count);
        Assert.All(refused, r => Assert.True(r.Status == StatusCode.FailedPrecondition, $"{r.Case}: {r.Status}"));
    }

    [Fact]
    public async Task Upload_SecondStreamWhileOneIsInFlight_FailedPreconditionAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "one-upload", 1, s_honest, length: 256, maxChunkBytes: 64);
        ScriptedParticipant bob = round.Participants[1];
        StatusCode second = StatusCode.OK;

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.MaskedInput)
            {
                return;
            }
            // A trickled upload holds its buffer; the same identity's second stream must not take another.
            using (var hog = new CancellationTokenSource())
            {
                AsyncClientStreamingCall<Federated.Protos.V1.MaskedInputChunk, UploadMaskedInputResponse> trickle =
                    bob.Connection.Edge.UploadMaskedInput(bob.Connection.Call(hog.Token));
                await trickle.RequestStream.WriteAsync(bob.Uploaded![0]);
                while (round.Round.UploadsInFlight == 0)
                {
                    await Task.Delay(10);
                }
                second = await Status(() => ScriptedParticipant.Upload(bob.Connection, bob.Uploaded!));
                await hog.CancelAsync();
                trickle.Dispose();
            }
            // The abandoned stream releases its claim; bob's real upload then goes through.
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (round.Round.UploadsInFlight != 0)
            {
                await Task.Delay(10, wait.Token);
            }
        });

        Assert.Equal(StatusCode.FailedPrecondition, second);
        Assert.Equal(round.ExpectedSum(), sum);
    }

    [Fact]
    public async Task StageCalls_WrongRound_FailedPreconditionOrInvalidArgumentAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "wrong-round", 1, s_honest);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.AdvertiseKeys)
            {
                return;
            }
            AdvertiseKeysRequest request = first.AdvertiseRequest();
            foreach ((string name, RoundRef? reference) in new (string, RoundRef?)[]
            {
                ("next round", new RoundRef { RunId = "wrong-round", Round = 2 }),
                ("other run", new RoundRef { RunId = "another-run", Round = 1 }),
                ("no round", null),
                ("round zero", new RoundRef { RunId = "wrong-round", Round = 0 }),
            })
            {
                AdvertiseKeysRequest wrong = request.Clone();
                wrong.Round = reference;
                statuses[name] = await Status(() => first.Connection.Edge.AdvertiseKeysAsync(wrong, first.Connection.Call(default)).ResponseAsync);
            }
            statuses["manifest of another run"] = await Status(() => first.Connection.Edge.GetRoundManifestAsync(
                new GetRoundManifestRequest { Round = new RoundRef { RunId = "another-run", Round = 1 } }, first.Connection.Call(default)).ResponseAsync);
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(StatusCode.FailedPrecondition, statuses["next round"]);
        Assert.Equal(StatusCode.FailedPrecondition, statuses["other run"]);
        Assert.Equal(StatusCode.FailedPrecondition, statuses["manifest of another run"]);
        Assert.Equal(StatusCode.InvalidArgument, statuses["no round"]);
        Assert.Equal(StatusCode.InvalidArgument, statuses["round zero"]);
    }

    [Fact]
    public async Task AdvertiseKeys_WrongKeyLengthOrOffCurve_InvalidArgumentAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "bad-keys", 1, s_honest);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.AdvertiseKeys)
            {
                return;
            }
            AdvertiseKeysRequest valid = first.AdvertiseRequest();
            byte[] offCurve = valid.MaskPublicKey.ToByteArray();
            offCurve[64] ^= 1; // y no longer matches x
            byte[] compressed = valid.MaskPublicKey.ToByteArray();
            compressed[0] = 0x02;
            foreach ((string name, ByteString key) in new[]
            {
                ("short", ByteString.CopyFrom(valid.MaskPublicKey.Span[..64])),
                ("long", ByteString.CopyFrom([.. valid.MaskPublicKey.Span, 0])),
                ("empty", ByteString.Empty),
                ("off curve", ByteString.CopyFrom(offCurve)),
                ("not uncompressed", ByteString.CopyFrom(compressed)),
                ("same as encryption key", valid.EncryptionPublicKey),
            })
            {
                AdvertiseKeysRequest bad = valid.Clone();
                bad.MaskPublicKey = key;
                statuses[name] = await Status(() => first.Connection.Edge.AdvertiseKeysAsync(bad, first.Connection.Call(default)).ResponseAsync);
            }
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(6, statuses.Count);
        Assert.All(statuses, s => Assert.True(s.Value == StatusCode.InvalidArgument, $"{s.Key}: {s.Value}"));
    }

    [Fact]
    public async Task ShareKeys_WrongShareCountOrLength_InvalidArgumentAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "bad-shares", 1, s_honest);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.ShareKeys)
            {
                return;
            }
            ShareKeysRequest valid = first.Shared!;
            foreach ((string name, Action<ShareKeysRequest> mutate) in new (string, Action<ShareKeysRequest>)[]
            {
                ("one share missing", r => r.Shares.RemoveAt(0)),
                ("share repeated", r => r.Shares.Add(r.Shares[0].Clone())),
                ("ciphertext truncated", r => r.Shares[0].Ciphertext = ByteString.CopyFrom(r.Shares[0].Ciphertext.Span[..^1])),
                ("from another index", r => r.Shares[0].FromIndex = (uint)(first.Index % 3 + 1)),
                ("to index zero", r => r.Shares[0].ToIndex = 0),
                ("to a non-participant", r => r.Shares[0].ToIndex = 99),
                ("commitment missing", r => r.Commitments.RemoveAt(0)),
                ("commitment short", r => r.Commitments[0].MaskKeyCommitment = ByteString.CopyFrom(new byte[31])),
            })
            {
                ShareKeysRequest bad = valid.Clone();
                mutate(bad);
                statuses[name] = await Status(() => first.Connection.Edge.ShareKeysAsync(bad, first.Connection.Call(default)).ResponseAsync);
            }
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(8, statuses.Count);
        Assert.All(statuses, s => Assert.True(s.Value == StatusCode.InvalidArgument, $"{s.Key}: {s.Value}"));
    }

    [Fact]
    public async Task UploadMaskedInput_WrongLengthOrRange_InvalidArgumentAndRoundCompletes()
    {
        // A 24-bit ring, so that a value outside Z_(2^b) can be sent.
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "bad-upload", 1, s_honest, bits: 24);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.MaskedInput)
            {
                return;
            }
            IReadOnlyList<MaskedInputChunk> valid = first.Uploaded!;
            ulong total = valid[0].TotalBytes;
            foreach ((string name, Func<MaskedInputChunk[]> chunks) in new (string, Func<MaskedInputChunk[]>)[]
            {
                ("total_bytes short by one element", () => [With(valid[0], c => c.TotalBytes = total - 4)]),
                ("total_bytes missing", () => [With(valid[0], c => c.TotalBytes = 0)]),
                ("chunk not whole elements", () => [With(valid[0], c => c.Data = ByteString.CopyFrom(c.Data.Span[..6]))]),
                ("empty chunk", () => [With(valid[0], c => c.Data = ByteString.Empty)]),
                ("first chunk at offset 4", () => [With(valid[0], c => c.Offset = 4)]),
                ("first chunk without round", () => [With(valid[0], c => c.Round = null)]),
                ("value outside the ring", () => [With(valid[0], c => c.Data = ByteString.CopyFrom([.. c.Data.Span[..^1], 0x01]))]),
                ("no chunks", () => []),
                // Later in the stream: before uploads were buffered until whole, any of these left a part-added
                // vector in the running sum and the round failed for everyone.
                ("stream ends after the first chunk", () => [valid[0]]),
                ("a later chunk skips ahead", () => [valid[0], valid[2]]),
                ("a later chunk outside the ring", () => [valid[0], With(valid[1], c => c.Data = ByteString.CopyFrom([.. c.Data.Span[..^1], 0x01]))]),
                ("a later chunk names another round", () => [valid[0], With(valid[1], c => c.Round = new RoundRef { RunId = "bad-upload", Round = 2 })]),
                // The holder's own record epsilon is shown in run status only, and still refused when it is no number.
                ("record_epsilon NaN", () => [With(valid[0], c => { c.RecordEpsilon = double.NaN; c.RecordEpsilonDelta = 1e-5; }), .. valid.Skip(1)]),
                ("record_epsilon negative", () => [With(valid[0], c => { c.RecordEpsilon = -1; c.RecordEpsilonDelta = 1e-5; }), .. valid.Skip(1)]),
                ("record_epsilon infinite", () => [With(valid[0], c => { c.RecordEpsilon = double.PositiveInfinity; c.RecordEpsilonDelta = 1e-5; }), .. valid.Skip(1)]),
                ("record_epsilon_delta 1", () => [With(valid[0], c => { c.RecordEpsilon = 2; c.RecordEpsilonDelta = 1; }), .. valid.Skip(1)]),
            })
            {
                statuses[name] = await Status(() => ScriptedParticipant.Upload(first.Connection, chunks()));
            }
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(16, statuses.Count);
        Assert.All(statuses, s => Assert.True(s.Value == StatusCode.InvalidArgument, $"{s.Key}: {s.Value}"));
    }

    [Fact]
    public async Task UploadMaskedInput_OverSizeCaps_ResourceExhaustedAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "oversize", 1, s_honest);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage == ScriptedStage.ShareKeys)
            {
                ShareKeysRequest huge = first.Shared!.Clone();
                huge.Shares[0].Ciphertext = ByteString.CopyFrom(new byte[Federated.Coordinator.CoordinatorHost.MaxReceiveMessageBytes]);
                statuses["share keys over the message cap"] = await Status(() => first.Connection.Edge.ShareKeysAsync(huge, first.Connection.Call(default)).ResponseAsync);
            }
            if (stage != ScriptedStage.MaskedInput)
            {
                return;
            }
            IReadOnlyList<MaskedInputChunk> valid = first.Uploaded!;
            statuses["total_bytes over the vector"] = await Status(() => ScriptedParticipant.Upload(first.Connection, [With(valid[0], c => c.TotalBytes += 4)]));
            statuses["chunk over max_chunk_bytes"] = await Status(() => ScriptedParticipant.Upload(first.Connection,
                [With(valid[0], c => c.Data = ByteString.CopyFrom([.. c.Data.Span, .. valid[1].Data.Span[..4]]))]));
            statuses["chunk over the message cap"] = await Status(() => ScriptedParticipant.Upload(first.Connection,
                [With(valid[0], c => c.Data = ByteString.CopyFrom(new byte[Federated.Coordinator.CoordinatorHost.MaxReceiveMessageBytes + 4]))]));
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(4, statuses.Count);
        Assert.All(statuses, s => Assert.True(s.Value == StatusCode.ResourceExhausted, $"{s.Key}: {s.Value}"));
    }

    [Fact]
    public async Task Unmask_MalformedShares_InvalidArgumentAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "bad-unmask", 1, s_honest);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.Unmask)
            {
                return;
            }
            UnmaskRequest valid = first.Unmasked!;
            foreach ((string name, Action<UnmaskRequest> mutate) in new (string, Action<UnmaskRequest>)[]
            {
                ("share repeated", r => r.SelfMaskShares.Add(r.SelfMaskShares[0].Clone())),
                ("share one byte short", r => r.SelfMaskShares[0].Share = ByteString.CopyFrom(r.SelfMaskShares[0].Share.Span[..^1])),
                ("salt short", r => r.SelfMaskShares[0].Salt = ByteString.CopyFrom(r.SelfMaskShares[0].Salt.Span[..^1])),
                ("owner index zero", r => r.SelfMaskShares[0].OwnerIndex = 0),
                ("mask key of a survivor", r => r.MaskKeyShares.Add(r.SelfMaskShares[0].Clone())),
            })
            {
                UnmaskRequest bad = valid.Clone();
                mutate(bad);
                statuses[name] = await Status(() => first.Connection.Edge.UnmaskAsync(bad, first.Connection.Call(default)).ResponseAsync);
            }
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(5, statuses.Count);
        Assert.All(statuses, s => Assert.True(s.Value == StatusCode.InvalidArgument, $"{s.Key}: {s.Value}"));
    }

    [Fact]
    public async Task Unmask_TamperedShareAndOmittedShare_OnlyThoseDroppedAndTheRoundReleasesTheExactSum()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "poisoned-share", 1, s_honest);
        ScriptedParticipant first = round.First;
        int owner = -1;

        uint[] sum = await round.RunAsync(beforeStage: stage =>
        {
            if (stage == ScriptedStage.Unmask)
            {
                // The first holder's own unmask message: one seed share altered (its commitment no longer matches),
                // another left out (as a holder that rejected that dealer's ciphertext does).
                UnmaskRequest request = first.Unmasked!;
                owner = (int)request.SelfMaskShares[0].OwnerIndex;
                request.SelfMaskShares[0].Share = Flip(request.SelfMaskShares[0].Share, 0);
                request.SelfMaskShares.RemoveAt(1);
            }
            return Task.CompletedTask;
        });

        // t = 2 of 3: the other two holders' verified shares reconstruct every seed; only the bad share was dropped.
        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal([(first.Index, owner)], round.Round.RejectedShares);
    }

    [Fact]
    public async Task StageCalls_Duplicate_FailedPreconditionAndRoundCompletes()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "duplicates", 1, s_honest);
        ScriptedParticipant first = round.First;
        var refused = new List<RpcException>();

        uint[] sum = await round.RunAsync(afterFirst: async stage =>
        {
            Task call = stage switch
            {
                ScriptedStage.AdvertiseKeys => first.Connection.Edge.AdvertiseKeysAsync(first.Advertised!, first.Connection.Call(default)).ResponseAsync,
                ScriptedStage.ShareKeys => first.Connection.Edge.ShareKeysAsync(first.Shared!, first.Connection.Call(default)).ResponseAsync,
                ScriptedStage.MaskedInput => ScriptedParticipant.Upload(first.Connection, first.Uploaded!),
                _ => first.Connection.Edge.UnmaskAsync(first.Unmasked!, first.Connection.Call(default)).ResponseAsync,
            };
            refused.Add(await Assert.ThrowsAsync<RpcException>(() => call));
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(4, refused.Count);
        Assert.All(refused, ex => Assert.Equal(StatusCode.FailedPrecondition, ex.StatusCode));
        Assert.All(refused, ex => Assert.Contains("already", ex.Status.Detail, StringComparison.Ordinal));
    }

    [Fact]
    public async Task StageCalls_ReplayOfEarlierRound_FailedPreconditionAndNextRoundCompletes()
    {
        AdvertiseKeysRequest advertise;
        ShareKeysRequest share;
        IReadOnlyList<MaskedInputChunk> upload;
        UnmaskRequest unmask;
        using (ScriptedRound one = await ScriptedRound.StartAsync(coordinator, "replay", 1, s_honest))
        {
            Assert.Equal(one.ExpectedSum(), await one.RunAsync());
            // The exact requests of round 1; the round is finished when `one` is disposed.
            (advertise, share, upload, unmask) = (one.First.Advertised!, one.First.Shared!, one.First.Uploaded!, one.First.Unmasked!);
        }

        using ScriptedRound two = await ScriptedRound.StartAsync(coordinator, "replay", 2, s_honest);
        ScriptedParticipant first = two.First;
        var statuses = new List<StatusCode>();
        uint[] sum = await two.RunAsync(beforeStage: async stage =>
        {
            // Each earlier message, byte for byte, during the stage it belongs to.
            statuses.Add(stage switch
            {
                ScriptedStage.AdvertiseKeys => await Status(() => first.Connection.Edge.AdvertiseKeysAsync(advertise, first.Connection.Call(default)).ResponseAsync),
                ScriptedStage.ShareKeys => await Status(() => first.Connection.Edge.ShareKeysAsync(share, first.Connection.Call(default)).ResponseAsync),
                ScriptedStage.MaskedInput => await Status(() => ScriptedParticipant.Upload(first.Connection, upload)),
                _ => await Status(() => first.Connection.Edge.UnmaskAsync(unmask, first.Connection.Call(default)).ResponseAsync),
            });
        });

        Assert.Equal(two.ExpectedSum(), sum);
        Assert.Equal([StatusCode.FailedPrecondition, StatusCode.FailedPrecondition, StatusCode.FailedPrecondition, StatusCode.FailedPrecondition], statuses);
    }

    [Fact]
    public async Task StageCalls_UnknownClient_PermissionDeniedAndRoundCompletes()
    {
        string frank = "frank-" + Guid.NewGuid().ToString("N")[..8];
        using (FederationPki pki = FederationPki.Load(coordinator.Pki, TimeProvider.System))
        {
            pki.IssueIdentity(coordinator.Pki, frank, FederationRole.Client, password: null);
        }
        using EdgeIdentity erinIdentity = EdgeIdentity.Load(coordinator.Identity("erin"), coordinator.CaPath);
        using var erin = new CoordinatorConnection(coordinator.Address, erinIdentity);
        await erin.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, default);
        using EdgeIdentity frankIdentity = EdgeIdentity.Load(coordinator.Identity(frank), coordinator.CaPath);
        using var unregistered = new CoordinatorConnection(coordinator.Address, frankIdentity);
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "outsiders", 1, s_honest);
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            ScriptedParticipant first = round.First;
            foreach ((string who, CoordinatorConnection connection) in new[] { ("registered", erin), ("unregistered", unregistered) })
            {
                string key = $"{who} {stage}";
                statuses[key] = stage switch
                {
                    ScriptedStage.AdvertiseKeys => await Status(() => connection.Edge.AdvertiseKeysAsync(first.AdvertiseRequest(), connection.Call(default)).ResponseAsync),
                    ScriptedStage.ShareKeys => await Status(() => connection.Edge.ShareKeysAsync(new ShareKeysRequest { Round = first.Round }, connection.Call(default)).ResponseAsync),
                    ScriptedStage.MaskedInput => await Status(() => ScriptedParticipant.Upload(connection, first.Uploaded!)),
                    _ => await Status(() => connection.Edge.UnmaskAsync(new UnmaskRequest { Round = first.Round }, connection.Call(default)).ResponseAsync),
                };
                if (stage == ScriptedStage.AdvertiseKeys)
                {
                    statuses[$"{who} manifest"] = await Status(() => connection.Edge.GetRoundManifestAsync(new GetRoundManifestRequest { Round = first.Round }, connection.Call(default)).ResponseAsync);
                    statuses[$"{who} decline"] = await Status(() => connection.Edge.DeclineRoundAsync(
                        new DeclineRoundRequest { Round = first.Round, Reason = DeclineReason.Busy }, connection.Call(default)).ResponseAsync);
                }
            }
        });
        StatusCode heartbeat = await Status(() => unregistered.Edge.HeartbeatAsync(new HeartbeatRequest { Available = true }, unregistered.Call(default)).ResponseAsync);

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(12, statuses.Count);
        Assert.All(statuses, s => Assert.True(s.Value == StatusCode.PermissionDenied, $"{s.Key}: {s.Value}"));
        Assert.Equal(StatusCode.FailedPrecondition, heartbeat);
        Assert.DoesNotContain(coordinator.Host.State.Clients.List(), c => c.ClientId == frank);
    }

    [Fact]
    public async Task AdminFloats_NaNOrInfinity_InvalidArgumentNamingTheFieldAndRoundCompletes()
    {
        // The edge service accepts no floating-point field (ring elements are integers); the admin service's are
        // the run plan's six doubles and the budget's two.
        using EdgeIdentity engineerIdentity = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
        using var engineer = new CoordinatorConnection(coordinator.Address, engineerIdentity);
        using EdgeIdentity officerIdentity = EdgeIdentity.Load(coordinator.Identity("officer"), coordinator.CaPath);
        using var officer = new CoordinatorConnection(coordinator.Address, officerIdentity);
        var asEngineer = new AdminService.AdminServiceClient(engineer.Channel);
        var asOfficer = new AdminService.AdminServiceClient(officer.Channel);
        var plan = new RunPlan
        {
            BaseModel = coordinator.Root, LoraRank = 2, Rounds = 1, ClientsPerRound = 3, LocalSteps = 1, LearningRate = 0.01,
            ClipNorm = 1.0, Mechanism = NoiseMechanism.DistributedSkellam, NoiseMultiplier = 0, TargetEpsilon = 1, Delta = 1e-6,
        };
        (string Field, Action<RunPlan, double> Set)[] planFields =
        [
            ("sampling_rate", (p, v) => p.SamplingRate = v),
            ("learning_rate", (p, v) => p.LearningRate = v),
            ("clip_norm", (p, v) => p.ClipNorm = v),
            ("noise_multiplier", (p, v) => p.NoiseMultiplier = v),
            ("target_epsilon", (p, v) => p.TargetEpsilon = v),
            ("delta", (p, v) => p.Delta = v),
        ];
        (string Field, Action<SetBudgetRequest, double> Set)[] budgetFields =
        [
            ("epsilon", (r, v) => r.Epsilon = v),
            ("delta", (r, v) => r.Delta = v),
        ];
        var refused = new List<(string Case, RpcException Error)>();
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "floats", 1, s_honest);

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.ShareKeys)
            {
                return;
            }
            foreach (double value in new[] { double.NaN, double.PositiveInfinity, double.NegativeInfinity })
            {
                foreach ((string field, Action<RunPlan, double> set) in planFields)
                {
                    RunPlan bad = plan.Clone();
                    set(bad, value);
                    refused.Add(($"plan {field} = {value}", await Assert.ThrowsAsync<RpcException>(() =>
                        asEngineer.StartRunAsync(new StartRunRequest { Plan = bad }, engineer.Call(default)).ResponseAsync)));
                }
                foreach ((string field, Action<SetBudgetRequest, double> set) in budgetFields)
                {
                    var bad = new SetBudgetRequest { Population = "floats", Epsilon = 1, Delta = 1e-6 };
                    set(bad, value);
                    refused.Add(($"budget {field} = {value}", await Assert.ThrowsAsync<RpcException>(() =>
                        asOfficer.SetBudgetAsync(bad, officer.Call(default)).ResponseAsync)));
                }
            }
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(24, refused.Count);
        Assert.All(refused, r => Assert.True(r.Error.StatusCode == StatusCode.InvalidArgument, $"{r.Case}: {r.Error.Status}"));
        Assert.All(refused, r => Assert.Contains(r.Case.Split(' ')[1], r.Error.Status.Detail, StringComparison.Ordinal));
        Assert.Null(coordinator.Host.State.Budgets.Get("floats"));
    }

    /// <summary>The status a call ended with; fails the test when it succeeded.</summary>
    internal static async Task<StatusCode> Status(Func<Task> call)
    {
        try
        {
            await call();
        }
        catch (RpcException ex)
        {
            return ex.StatusCode;
        }
        Assert.Fail("the call succeeded");
        return StatusCode.OK;
    }

    private static MaskedInputChunk FirstChunk(ScriptedParticipant participant, byte[] data) => new()
    {
        Round = participant.Round,
        TotalBytes = 4UL * participant.Manifest.Secagg.VectorLength,
        Data = ByteString.CopyFrom(data),
    };

    private static MaskedInputChunk With(MaskedInputChunk chunk, Action<MaskedInputChunk> change)
    {
        MaskedInputChunk copy = chunk.Clone();
        change(copy);
        return copy;
    }

    private static ByteString Flip(ByteString value, int index)
    {
        byte[] bytes = value.ToByteArray();
        bytes[index] ^= 1;
        return ByteString.CopyFrom(bytes);
    }
}
