using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Security;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Issue 8's deadlines and stream caps on real loopback sockets: the server ends calls that outlive its limits even
/// when the client sent no deadline, and a client over its stream or concurrency cap is slowed or refused while
/// other clients carry on.
/// </summary>
public sealed class CallLimitTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task StageLongPoll_NoClientDeadline_ServerEndsItWithDeadlineExceededAndRoundGoesOn()
    {
        var logs = new CapturedLogs();
        await using CoordinatorHost host = await StartAsync("unary-cap", o => o.MaxUnaryCallSeconds = 2, logs);
        SecAggRound round = host.Rounds.Start(new SecAggRoundPlan("deadline-run", 1, ["alice", "bob"], 16, 32, Degree: 1, Threshold: 2, StageTimeout: TimeSpan.FromMinutes(10)));
        using EdgeIdentity aliceIdentity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using EdgeIdentity bobIdentity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using EdgeIdentity carolIdentity = EdgeIdentity.Load(coordinator.Identity("carol"), coordinator.CaPath);
        using var alice = new CoordinatorConnection(host.Address, aliceIdentity);
        using var bob = new CoordinatorConnection(host.Address, bobIdentity);
        using var carol = new CoordinatorConnection(host.Address, carolIdentity);

        // No deadline at all: without the server's cap this long poll would wait the stage's ten minutes for bob.
        var ended = await Assert.ThrowsAsync<RpcException>(() => alice.Edge.AdvertiseKeysAsync(Keys(round.Ref, aliceIdentity, 1), new CallOptions()).ResponseAsync);
        await carol.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, default);
        HeartbeatResponse other = await carol.HeartbeatAsync(new HeartbeatRequest { Available = true }, default);
        bool aliceStillIn = round.HasSubmitted("alice");
        AdvertiseKeysResponse roster = await bob.Edge.AdvertiseKeysAsync(Keys(round.Ref, bobIdentity, 2), bob.Call(default)).ResponseAsync;

        Assert.Equal(StatusCode.DeadlineExceeded, ended.StatusCode);
        Assert.Contains("limit of 2 s", ended.Status.Detail, StringComparison.Ordinal);
        Assert.True(other.HeartbeatIntervalSeconds > 0);
        // Alice's submission stands (the cap ended her wait, not her part in the round), so bob's closes the stage.
        Assert.True(aliceStillIn);
        Assert.Equal(["alice"], roster.Neighbours.Select(n => n.Participant.ClientId));
        Assert.Equal(RoundStage.ShareKeys, round.Stage);
        Assert.Contains(logs.Lines, l => l.EventId == 1010 && l.Message.Contains("from alice", StringComparison.Ordinal));
        host.Rounds.Finish(round);
    }

    [Fact]
    public async Task UploadStream_ClientSendsNothing_EndedAfterIdleLimit()
    {
        await using CoordinatorHost host = await StartAsync("idle-cap", o => o.StreamIdleSeconds = 2);
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var alice = new CoordinatorConnection(host.Address, identity);

        // A slow-loris upload: the stream is opened and held, with no deadline and no message.
        using AsyncClientStreamingCall<MaskedInputChunk, UploadMaskedInputResponse> call = alice.Edge.UploadMaskedInput(new CallOptions());
        var ended = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync);
        HeartbeatResponse afterwards = await RegisterAndBeatAsync(alice);

        Assert.Equal(StatusCode.DeadlineExceeded, ended.StatusCode);
        Assert.Contains("no message for 2 s", ended.Status.Detail, StringComparison.Ordinal);
        Assert.True(afterwards.HeartbeatIntervalSeconds > 0);
        Assert.Equal(0, host.Services.GetRequiredService<CallLimitInterceptor>().CallsInProgress("alice"));
    }

    [Fact]
    public async Task DownloadStream_ReaderStalls_EndedAfterTotalStreamLimit()
    {
        var logs = new CapturedLogs();
        await using CoordinatorHost host = await StartAsync("stream-cap", o => (o.MaxStreamSeconds, o.StreamIdleSeconds) = (3, 3), logs);
        // Far more than HTTP/2 flow control lets the server write to a reader that reads nothing.
        string sha = host.Adapters.Put(RandomNumberGenerator.GetBytes(8 << 20), "stream-cap", 0);
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using var bob = new CoordinatorConnection(host.Address, identity);

        using AsyncServerStreamingCall<AdapterChunk> call = bob.Edge.DownloadAdapter(new DownloadAdapterRequest { Sha256 = sha }, new CallOptions());
        CallLimitInterceptor limits = host.Services.GetRequiredService<CallLimitInterceptor>();
        await WaitUntilAsync(() => limits.CallsInProgress("bob") == 1);
        await WaitUntilAsync(() => limits.CallsInProgress("bob") == 0); // the server gave up on the stalled reader
        long received = 0;
        var ended = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            while (await call.ResponseStream.MoveNext(CancellationToken.None))
            {
                received += call.ResponseStream.Current.Data.Length;
            }
        });

        // The status cannot overtake the data the reader left unread, so the server resets the stream (HTTP/2 CANCEL)
        // and says why in its log; the client sees the reset after the chunks that were already on their way.
        Assert.Contains(ended.StatusCode, new[] { StatusCode.Cancelled, StatusCode.Internal, StatusCode.DeadlineExceeded });
        Assert.True(received < 8 << 20, $"{received} bytes arrived");
        Assert.True(logs.Lines.Any(l => l.EventId == 1010 && l.Message.Contains("DownloadAdapter from bob: the stream exceeded the coordinator's limit of 3 s", StringComparison.Ordinal)),
            string.Join("\n", logs.Lines.Select(l => l.EventId + " " + l.Message)));
    }

    [Fact]
    public async Task Calls_OverPerIdentityConcurrencyCap_ResourceExhaustedWhileOthersContinue()
    {
        var logs = new CapturedLogs();
        await using CoordinatorHost host = await StartAsync("identity-cap", o => o.MaxConcurrentCallsPerIdentity = 2, logs);
        using EdgeIdentity aliceIdentity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using EdgeIdentity bobIdentity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using var alice = new CoordinatorConnection(host.Address, aliceIdentity);
        using var bob = new CoordinatorConnection(host.Address, bobIdentity);
        await alice.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, default);
        CallLimitInterceptor limits = host.Services.GetRequiredService<CallLimitInterceptor>();

        using var hold = new CancellationTokenSource();
        AsyncClientStreamingCall<MaskedInputChunk, UploadMaskedInputResponse>[] held =
            [alice.Edge.UploadMaskedInput(new CallOptions(cancellationToken: hold.Token)), alice.Edge.UploadMaskedInput(new CallOptions(cancellationToken: hold.Token))];
        await WaitUntilAsync(() => limits.CallsInProgress("alice") == 2);
        var refused = await Assert.ThrowsAsync<RpcException>(() => alice.Edge.HeartbeatAsync(new HeartbeatRequest { Available = true }, alice.Call(default)).ResponseAsync);
        HeartbeatResponse other = await RegisterAndBeatAsync(bob);
        await hold.CancelAsync();
        await WaitUntilAsync(() => limits.CallsInProgress("alice") == 0);
        HeartbeatResponse afterwards = await alice.HeartbeatAsync(new HeartbeatRequest { Available = true }, default);

        Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
        Assert.Contains("'alice' already has 2 calls in progress", refused.Status.Detail, StringComparison.Ordinal);
        Assert.True(other.HeartbeatIntervalSeconds > 0);
        Assert.True(afterwards.HeartbeatIntervalSeconds > 0);
        Assert.Contains(logs.Lines, l => l.EventId == 1011 && l.Message.Contains("from alice", StringComparison.Ordinal));
        foreach (var call in held)
        {
            call.Dispose();
        }
    }

    [Fact]
    public async Task Http2Streams_OverPerConnectionCap_ExtraCallWaitsForAFreeStreamWhileOthersContinue()
    {
        await using CoordinatorHost host = await StartAsync("stream-count", o => o.MaxStreamsPerConnection = 2);
        using EdgeIdentity aliceIdentity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using EdgeIdentity bobIdentity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        // One connection only, so the server's SETTINGS_MAX_CONCURRENT_STREAMS binds it.
        using GrpcChannel channel = SingleConnectionChannel(host.Address, aliceIdentity);
        var alice = new EdgeService.EdgeServiceClient(channel);
        using var bob = new CoordinatorConnection(host.Address, bobIdentity);
        await alice.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, new CallOptions(deadline: DateTime.UtcNow.AddMinutes(1)));
        CallLimitInterceptor limits = host.Services.GetRequiredService<CallLimitInterceptor>();

        using var first = new CancellationTokenSource();
        using var second = new CancellationTokenSource();
        using var one = alice.UploadMaskedInput(new CallOptions(cancellationToken: first.Token));
        using var two = alice.UploadMaskedInput(new CallOptions(cancellationToken: second.Token));
        await WaitUntilAsync(() => limits.CallsInProgress("alice") == 2);
        Task<HeartbeatResponse> queued = alice.HeartbeatAsync(new HeartbeatRequest { Available = true }, new CallOptions(deadline: DateTime.UtcNow.AddMinutes(1))).ResponseAsync;
        HeartbeatResponse other = await RegisterAndBeatAsync(bob);
        await Task.WhenAny(queued, Task.Delay(TimeSpan.FromSeconds(1)));
        bool waited = !queued.IsCompleted && limits.CallsInProgress("alice") == 2;
        await first.CancelAsync();
        HeartbeatResponse afterwards = await queued;

        Assert.True(waited, "the third call on a connection capped at two streams did not wait for a free stream");
        Assert.True(other.HeartbeatIntervalSeconds > 0);
        Assert.True(afterwards.HeartbeatIntervalSeconds > 0);
        await second.CancelAsync();
    }

    [Fact]
    public void Validate_LimitsOutOfRange_NameTheAllowedRange()
    {
        var idle = new CoordinatorOptions { Pki = "pki", MaxStreamSeconds = 10, StreamIdleSeconds = 11 };
        var streams = new CoordinatorOptions { Pki = "pki", MaxStreamsPerConnection = 0 };

        Assert.Contains("stream idle time must be in 1..10 seconds", Assert.Throws<ArgumentOutOfRangeException>(idle.Validate).Message, StringComparison.Ordinal);
        Assert.Contains("streams per connection must be in 1..10000", Assert.Throws<ArgumentOutOfRangeException>(streams.Validate).Message, StringComparison.Ordinal);
    }

    private async Task<CoordinatorHost> StartAsync(string name, Action<CoordinatorOptions> configure, CapturedLogs? logs = null)
    {
        var options = new CoordinatorOptions { Pki = coordinator.Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(coordinator.Root, name + ".db") };
        configure(options);
        CoordinatorHost host = CoordinatorHost.Create(options, logging => logging.AddProvider(logs ?? new CapturedLogs()).SetMinimumLevel(LogLevel.Debug));
        await host.StartAsync(CancellationToken.None);
        return host;
    }

    private static async Task<HeartbeatResponse> RegisterAndBeatAsync(CoordinatorConnection connection)
    {
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, default);
        return await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, default);
    }

    private static AdvertiseKeysRequest Keys(RoundRef round, EdgeIdentity identity, uint index)
    {
        using var cipher = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        using var mask = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        var request = new AdvertiseKeysRequest { Round = round, EncryptionPublicKey = Point(cipher), MaskPublicKey = Point(mask) };
        request.KeySignature = ByteString.CopyFrom(Federated.Wire.KeyAdvertisement.Sign(identity.Certificate, round, index, request.EncryptionPublicKey.Span, request.MaskPublicKey.Span));
        return request;
    }

    private static ByteString Point(ECDiffieHellman key)
    {
        ECParameters p = key.ExportParameters(includePrivateParameters: false);
        return ByteString.CopyFrom([0x04, .. p.Q.X!, .. p.Q.Y!]);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (!condition())
        {
            await Task.Delay(20, limit.Token);
        }
    }

    /// <summary>A channel with mutual TLS over exactly one HTTP/2 connection (the edge client allows several).</summary>
    private static GrpcChannel SingleConnectionChannel(Uri address, EdgeIdentity identity)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = false,
            SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificates = [identity.Certificate],
                LocalCertificateSelectionCallback = (_, _, _, _, _) => identity.Certificate,
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    using var chain = new X509Chain();
                    chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.CustomTrustStore.Add(identity.Ca);
                    chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                    return certificate is X509Certificate2 server && chain.Build(server);
                },
            },
        };
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
    }
}
