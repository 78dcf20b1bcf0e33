using System.Security.Cryptography;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Wire;
using Grpc.Core;
using ProtoChunk = Federated.Protos.V1.MaskedInputChunk;

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

    /// <summary>The participant's identity (its certificate and key): what it signs with.</summary>
    public EdgeIdentity Identity => _identity;

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
            return new ScriptedParticipant(identity, connection, manifest, new ClientSession(SecAggWire.Parameters(manifest), (int)manifest.Self.Index));
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
        Advertised ??= SecAggWire.ToSignedRequest(Round, (uint)Index, _session.AdvertiseKeys(), _identity.Certificate);
        return Advertised;
    }

    public Task<AdvertiseKeysResponse> AdvertiseAsync() =>
        Connection.Edge.AdvertiseKeysAsync(AdvertiseRequest(), Connection.Call(CancellationToken.None)).ResponseAsync;

    public ShareKeysRequest ShareRequest(AdvertiseKeysResponse roster)
    {
        Shared = SecAggWire.ToRequest(Round, _session.ReceiveRoster(SecAggWire.FromResponse(Index, roster)));
        return Shared;
    }

    public async Task ShareAsync()
    {
        ShareKeysResponse inbound = await Connection.Edge.ShareKeysAsync(Shared!, Connection.Call(CancellationToken.None)).ResponseAsync;
        _session.ReceiveForwardedShares(SecAggWire.FromResponse(Index, inbound));
    }

    /// <summary>The masked input as the chunks an honest client streams (round and total on the first).</summary>
    public IReadOnlyList<ProtoChunk> UploadChunks(uint[] input)
    {
        uint[] masked = _session.MaskInput(input).MaskedInput;
        Uploaded = [.. SecAggWire.UploadChunks(Round, new RingElementBytes(masked).Memory, Manifest.Secagg.MaxChunkBytes)];
        return Uploaded;
    }

    public Task<UploadMaskedInputResponse> UploadAsync() => Upload(Connection, Uploaded!);

    public UnmaskRequest UnmaskRequest(UploadMaskedInputResponse survivors)
    {
        Unmasked = SecAggWire.ToRequest(Round, _session.ReceiveUnmaskRequest(SecAggWire.FromResponse(Index, survivors)));
        return Unmasked;
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
