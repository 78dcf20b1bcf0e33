using System.Buffers.Binary;
using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Google.Protobuf;
using Grpc.Core;
using ProtoChunk = Federated.Protos.V1.MaskedInputChunk;
using ProtoEncryptedShare = Federated.Protos.V1.EncryptedShare;
using ProtoShareCommitment = Federated.Protos.V1.ShareCommitment;
using SecAggParameters = Federated.Aggregation.SecureAggregation.SecAggParameters;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// One honest participant driven stage by stage over real mutual TLS, so that a test can send other messages
/// between the stages and keep the exact requests it sent (for duplicates, replays and mutations).
/// </summary>
internal sealed class ScriptedParticipant : IDisposable
{
    private readonly EdgeIdentity _identity;
    private readonly ClientSession _session;

    private ScriptedParticipant(EdgeIdentity identity, CoordinatorConnection connection, RoundManifest manifest, ClientSession session)
    {
        _identity = identity;
        Connection = connection;
        Manifest = manifest;
        _session = session;
    }

    public CoordinatorConnection Connection { get; }

    public RoundManifest Manifest { get; }

    public RoundRef Round => Manifest.Round;

    public int Index => (int)Manifest.Self.Index;

    public string Name => _identity.Name;

    public AdvertiseKeysRequest? Advertised { get; private set; }

    public ShareKeysRequest? Shared { get; private set; }

    public IReadOnlyList<ProtoChunk>? Uploaded { get; private set; }

    public UnmaskRequest? Unmasked { get; private set; }

    /// <summary>Connects, registers and fetches this identity's manifest of <paramref name="round"/>.</summary>
    public static async Task<ScriptedParticipant> JoinAsync(CoordinatorFixture coordinator, string name, RoundRef round)
    {
        EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(name), coordinator.CaPath);
        var connection = new CoordinatorConnection(coordinator.Address, identity);
        try
        {
            await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            GetRoundManifestResponse signed = await connection.Edge.GetRoundManifestAsync(new GetRoundManifestRequest { Round = round }, connection.Call(CancellationToken.None));
            RoundManifest manifest = RoundManifest.Parser.ParseFrom(signed.Manifest);
            Federated.Protos.V1.SecAggParameters wire = manifest.Secagg;
            SecAggParameters parameters = SecAggParameters.Create(
                manifest.Round.RunId, manifest.Round.Round, manifest.Participants.Select(p => (int)p.Index),
                (int)wire.VectorLength, (int)wire.RingBits, (int)wire.Neighbours, (int)wire.Threshold, wire.GraphSeed.Span);
            return new ScriptedParticipant(identity, connection, manifest, new ClientSession(parameters, (int)manifest.Self.Index));
        }
        catch
        {
            connection.Dispose();
            identity.Dispose();
            throw;
        }
    }

    public AdvertiseKeysRequest AdvertiseRequest()
    {
        if (Advertised is null)
        {
            AdvertiseKeysMessage keys = _session.AdvertiseKeys();
            Advertised = new AdvertiseKeysRequest
            {
                Round = Round,
                EncryptionPublicKey = ByteString.CopyFrom(keys.CipherPublicKey),
                MaskPublicKey = ByteString.CopyFrom(keys.MaskPublicKey),
            };
        }
        return Advertised;
    }

    public Task<AdvertiseKeysResponse> AdvertiseAsync() =>
        Connection.Edge.AdvertiseKeysAsync(AdvertiseRequest(), Connection.Call(CancellationToken.None)).ResponseAsync;

    public ShareKeysRequest ShareRequest(AdvertiseKeysResponse roster)
    {
        ShareKeysMessage dealt = _session.ReceiveRoster(new KeyRosterMessage(Index,
            [.. roster.Neighbours.Select(n => new AdvertisedKeys((int)n.Participant.Index, n.EncryptionPublicKey.ToByteArray(), n.MaskPublicKey.ToByteArray()))]));
        var request = new ShareKeysRequest { Round = Round };
        request.Shares.AddRange(dealt.Shares.Select(s => new ProtoEncryptedShare { FromIndex = (uint)Index, ToIndex = (uint)s.Receiver, Ciphertext = ByteString.CopyFrom(s.Ciphertext) }));
        request.Commitments.AddRange(dealt.Commitments.Select(c => new ProtoShareCommitment
        {
            HolderIndex = (uint)c.Holder,
            SelfMaskSeedCommitment = ByteString.CopyFrom(c.SelfMaskSeedCommitment),
            MaskKeyCommitment = ByteString.CopyFrom(c.MaskKeyCommitment),
        }));
        Shared = request;
        return request;
    }

    public async Task ShareAsync()
    {
        ShareKeysResponse inbound = await Connection.Edge.ShareKeysAsync(Shared!, Connection.Call(CancellationToken.None)).ResponseAsync;
        _session.ReceiveForwardedShares(new ForwardedSharesMessage(Index, [.. inbound.Shares.Select(s => new ForwardedShare((int)s.FromIndex, s.Ciphertext.ToByteArray()))]));
    }

    /// <summary>The masked input as the chunks an honest client streams (round and total on the first).</summary>
    public IReadOnlyList<ProtoChunk> UploadChunks(uint[] input)
    {
        uint[] masked = _session.MaskInput(input).MaskedInput;
        int perChunk = (int)Math.Max(1, Manifest.Secagg.MaxChunkBytes / 4);
        var chunks = new List<ProtoChunk>();
        for (int offset = 0; offset < masked.Length; offset += perChunk)
        {
            int count = Math.Min(perChunk, masked.Length - offset);
            byte[] data = new byte[4 * count];
            for (int i = 0; i < count; i++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(4 * i), masked[offset + i]);
            }
            var chunk = new ProtoChunk { Offset = 4UL * (ulong)offset, Data = ByteString.CopyFrom(data) };
            if (offset == 0)
            {
                chunk.Round = Round;
                chunk.TotalBytes = 4UL * (ulong)masked.Length;
            }
            chunks.Add(chunk);
        }
        Uploaded = chunks;
        return chunks;
    }

    public Task<UploadMaskedInputResponse> UploadAsync() => Upload(Connection, Uploaded!);

    public UnmaskRequest UnmaskRequest(UploadMaskedInputResponse survivors)
    {
        UnmaskResponseMessage reveal = _session.ReceiveUnmaskRequest(new UnmaskRequestMessage(Index,
            [.. survivors.Survivors.Select(i => (int)i)], [.. survivors.Dropped.Select(i => (int)i)]));
        var request = new UnmaskRequest { Round = Round };
        request.SelfMaskShares.AddRange(reveal.SelfMaskSeedShares.Select(ToWire));
        request.MaskKeyShares.AddRange(reveal.MaskKeyShares.Select(ToWire));
        Unmasked = request;
        return request;
    }

    public Task<UnmaskResponse> UnmaskAsync() =>
        Connection.Edge.UnmaskAsync(Unmasked!, Connection.Call(CancellationToken.None)).ResponseAsync;

    /// <summary>Streams <paramref name="chunks"/> as one upload call of <paramref name="connection"/>.</summary>
    public static async Task<UploadMaskedInputResponse> Upload(CoordinatorConnection connection, IEnumerable<ProtoChunk> chunks)
    {
        using AsyncClientStreamingCall<ProtoChunk, UploadMaskedInputResponse> call = connection.Edge.UploadMaskedInput(connection.Call(CancellationToken.None));
        try
        {
            foreach (ProtoChunk chunk in chunks)
            {
                await call.RequestStream.WriteAsync(chunk);
            }
            await call.RequestStream.CompleteAsync();
        }
        catch (Exception ex) when (ex is RpcException or InvalidOperationException or IOException)
        {
            // The server refused part-way and ended the call; its status is what the response carries.
        }
        return await call.ResponseAsync;
    }

    public void Dispose()
    {
        _session.Dispose();
        Connection.Dispose();
        _identity.Dispose();
    }

    private static ReconstructionShare ToWire(RevealedShare share) => new()
    {
        OwnerIndex = (uint)share.Owner,
        Share = ByteString.CopyFrom(share.Share),
        Salt = ByteString.CopyFrom(share.Salt),
    };
}

/// <summary>The four stages of a SecAgg+ round as a scripted test drives them.</summary>
internal enum ScriptedStage
{
    AdvertiseKeys,
    ShareKeys,
    MaskedInput,
    Unmask,
}

/// <summary>
/// An honest round of scripted participants on a real coordinator. At each stage the first participant submits,
/// the test's hook runs once the coordinator has accepted that submission (the others have not yet submitted, so
/// the stage is still open), then the others submit. The round must release the exact sum of the inputs.
/// </summary>
internal sealed class ScriptedRound : IDisposable
{
    private readonly CoordinatorFixture _coordinator;

    private ScriptedRound(CoordinatorFixture coordinator, SecAggRound round, IReadOnlyList<ScriptedParticipant> participants, IReadOnlyList<uint[]> inputs)
    {
        _coordinator = coordinator;
        Round = round;
        Participants = participants;
        Inputs = inputs;
    }

    public SecAggRound Round { get; }

    public IReadOnlyList<ScriptedParticipant> Participants { get; }

    /// <summary>The participant whose submissions the hooks follow.</summary>
    public ScriptedParticipant First => Participants[0];

    public IReadOnlyList<uint[]> Inputs { get; }

    public static async Task<ScriptedRound> StartAsync(CoordinatorFixture coordinator, string runId, int number, string[] names, int length = 64, int bits = 32, int maxChunkBytes = 64)
    {
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan(
            runId, number, names, length, bits, Degree: names.Length - 1, Threshold: names.Length - 1, StageTimeout: TimeSpan.FromSeconds(120), MaxChunkBytes: maxChunkBytes));
        var participants = new List<ScriptedParticipant>();
        try
        {
            foreach (string name in names)
            {
                participants.Add(await ScriptedParticipant.JoinAsync(coordinator, name, round.Ref));
            }
        }
        catch
        {
            participants.ForEach(p => p.Dispose());
            coordinator.Host.Rounds.Finish(round);
            throw;
        }
        // Participants sorted by index, so First is index 1 whatever the names.
        participants.Sort((a, b) => a.Index.CompareTo(b.Index));
        uint mask = bits == 32 ? uint.MaxValue : (1u << bits) - 1;
        uint[][] inputs = [.. participants.Select(_ =>
        {
            byte[] bytes = RandomNumberGenerator.GetBytes(4 * length);
            return Enumerable.Range(0, length).Select(i => BitConverter.ToUInt32(bytes, 4 * i) & mask).ToArray();
        })];
        return new ScriptedRound(coordinator, round, participants, inputs);
    }

    /// <summary>The sum the coordinator must release: every input added in Z_(2^b).</summary>
    public uint[] ExpectedSum()
    {
        int bits = Round.Parameters.Bits;
        uint mask = bits == 32 ? uint.MaxValue : (1u << bits) - 1;
        var sum = new uint[Inputs[0].Length];
        foreach (uint[] input in Inputs)
        {
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] = unchecked(sum[i] + input[i]) & mask;
            }
        }
        return sum;
    }

    /// <summary>
    /// Runs the four stages. <paramref name="beforeStage"/> runs while the stage is open and nobody has submitted;
    /// <paramref name="afterFirst"/> runs once the first participant's submission was accepted. Returns the released sum.
    /// </summary>
    public async Task<uint[]> RunAsync(Func<ScriptedStage, Task>? beforeStage = null, Func<ScriptedStage, Task>? afterFirst = null)
    {
        beforeStage ??= _ => Task.CompletedTask;
        afterFirst ??= _ => Task.CompletedTask;

        await beforeStage(ScriptedStage.AdvertiseKeys);
        AdvertiseKeysResponse[] rosters = await Stage(ScriptedStage.AdvertiseKeys, p => p.AdvertiseAsync(), afterFirst);

        for (int i = 0; i < Participants.Count; i++)
        {
            Participants[i].ShareRequest(rosters[i]);
        }
        await beforeStage(ScriptedStage.ShareKeys);
        await Stage(ScriptedStage.ShareKeys, async p => { await p.ShareAsync(); return true; }, afterFirst);

        for (int i = 0; i < Participants.Count; i++)
        {
            Participants[i].UploadChunks(Inputs[i]);
        }
        await beforeStage(ScriptedStage.MaskedInput);
        UploadMaskedInputResponse[] survivors = await Stage(ScriptedStage.MaskedInput, p => p.UploadAsync(), afterFirst);

        for (int i = 0; i < Participants.Count; i++)
        {
            Participants[i].UnmaskRequest(survivors[i]);
        }
        await beforeStage(ScriptedStage.Unmask);
        await Stage(ScriptedStage.Unmask, p => p.UnmaskAsync(), afterFirst);
        return await Round.Sum.WaitAsync(TimeSpan.FromSeconds(120));
    }

    public void Dispose()
    {
        _coordinator.Host.Rounds.Finish(Round);
        foreach (ScriptedParticipant participant in Participants)
        {
            participant.Dispose();
        }
    }

    private async Task<T[]> Stage<T>(ScriptedStage stage, Func<ScriptedParticipant, Task<T>> submit, Func<ScriptedStage, Task> afterFirst)
    {
        Task<T> first = submit(First);
        using (var wait = new CancellationTokenSource(TimeSpan.FromSeconds(120)))
        {
            // The first call is a long poll that returns only when the stage closes; wait until it was accepted.
            while (!Round.HasSubmitted(First.Name))
            {
                if (first.IsFaulted)
                {
                    await first;
                }
                await Task.Delay(10, wait.Token);
            }
        }
        await afterFirst(stage);
        Task<T>[] rest = [.. Participants.Skip(1).Select(submit)];
        return [await first, .. await Task.WhenAll(rest)];
    }
}
