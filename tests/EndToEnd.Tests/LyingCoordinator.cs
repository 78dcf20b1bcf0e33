using System.Net;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Threading.Channels;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Trust;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// A lying coordinator: a real gRPC server over real mutual TLS with the federation's server certificate (so the real
/// edge client trusts it, as it would trust a coordinator whose operator turned hostile), speaking the edge protocol the
/// real <c>EdgeSession</c>, <c>EdgeRoundWorker</c> and <c>SecAggParticipant</c> speak. It signs manifests with the
/// server key (<see cref="CoordinatorSigner"/>), serves a global adapter signed by the federation's adapter signer
/// (<see cref="AdapterSigner"/>), and runs each round with the real <c>ServerSession</c> and real <c>ClientSession</c>s
/// for the sybil peers it holds; each <see cref="LyingRound"/> says where it lies.
/// </summary>
internal sealed class LyingCoordinator : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly LyingEdgeService _service;
    private readonly X509Certificate2[] _certificates;

    private LyingCoordinator(WebApplication app, LyingEdgeService service, params X509Certificate2[] certificates)
    {
        _app = app;
        _service = service;
        _certificates = certificates;
    }

    /// <summary>The https address the edges connect to.</summary>
    public Uri Address => new(_app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    /// <summary>Adapter downloads served so far (any client, any adapter).</summary>
    public int Downloads => _service.Downloads;

    /// <summary>Starts on 127.0.0.1 with an ephemeral port, presenting <paramref name="federation"/>'s server certificate.</summary>
    public static async Task<LyingCoordinator> StartAsync(TestFederation federation, string modelDirectory, LoraSettings lora)
    {
        X509Certificate2 ca = X509CertificateLoader.LoadCertificateFromFile(federation.CaPath);
        X509Certificate2 server = federation.Certificate(TestFederation.ServerName);
        var trust = new FederationTrust(ca, TimeProvider.System);
        if (!File.Exists(federation.Identity(TestFederation.AdapterSignerName)))
        {
            // As the real coordinator does at its first start.
            using FederationPki authority = FederationPki.Load(federation.Directory, TimeProvider.System);
            authority.IssueAdapterSigner(federation.Directory, password: null);
        }
        // The adapter the rounds start from, made and signed by the real coordinator code with the real signer identity.
        GlobalAdapter adapter = GlobalAdapter.Create(modelDirectory, lora);
        byte[] blob = adapter.Serialize();
        byte[] signature;
        using (var signer = new AdapterSigner(federation.Certificate(TestFederation.AdapterSignerName), ca))
        {
            signature = signer.Sign(blob);
        }
        var service = new LyingEdgeService(federation, new CoordinatorSigner(server), blob, signature, adapter.BDimension);

        WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ApplicationName = typeof(LyingCoordinator).Assembly.GetName().Name });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
        {
            listen.Protocols = HttpProtocols.Http2;
            listen.UseHttps(new HttpsConnectionAdapterOptions
            {
                ServerCertificate = server,
                SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateMode = ClientCertificateMode.RequireCertificate,
                CheckCertificateRevocation = false,
                ClientCertificateValidation = (certificate, _, _) => trust.TryValidateClient(certificate, out _, out _),
            });
        }));
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(service);
        WebApplication app = builder.Build();
        app.MapGrpcService<LyingEdgeService>();
        await app.StartAsync();
        return new LyingCoordinator(app, service, server, ca);
    }

    /// <summary>Opens (or replaces: a lie of its own) the round <paramref name="plan"/> names; the edges are invited with <see cref="Invite"/>.</summary>
    public LyingRound Open(LyingRoundPlan plan) => _service.Open(plan);

    /// <summary>Hands <paramref name="client"/> an invitation to <paramref name="round"/> at its next heartbeat.</summary>
    public void Invite(string client, RoundRef round) => _service.Invite(client, round);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        _service.Dispose();
        foreach (X509Certificate2 certificate in _certificates)
        {
            certificate.Dispose();
        }
    }
}

/// <summary>
/// One round as the lying coordinator runs it: <paramref name="Edges"/> are the real edge clients, <paramref name="Sybils"/>
/// identities of the federation the coordinator holds (their keys, shares and signatures are its own).
/// </summary>
/// <param name="CrlDer">The CRL the manifests carry (empty: none).</param>
internal sealed record LyingRoundPlan(string RunId, uint Round, IReadOnlyList<string> Edges, IReadOnlyList<string> Sybils, int Threshold, byte[]? CrlDer = null)
{
    public double NoiseMultiplier { get; init; } = 1.0;

    public double Delta { get; init; } = 1e-6;

    /// <summary>What the coordinator says the roster holds, per receiving participant index (null: the truth).</summary>
    public Func<int, AdvertiseKeysResponse, AdvertiseKeysResponse>? LieRoster { get; init; }

    /// <summary>What the coordinator says survived the upload stage, per receiving participant index (null: the truth).</summary>
    public Func<int, UploadMaskedInputResponse, UploadMaskedInputResponse>? LieSurvivors { get; init; }
}

/// <summary>The edge service of the lying coordinator: maps each call to its round; what it received is kept for the tests.</summary>
internal sealed class LyingEdgeService(TestFederation federation, CoordinatorSigner signer, byte[] adapter, byte[] adapterSignature, int dimension)
    : EdgeService.EdgeServiceBase, IDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<(string, uint), LyingRound> _rounds = [];
    private readonly Dictionary<string, Channel<RoundRef>> _invitations = new(StringComparer.Ordinal);
    private readonly AdapterRef _adapter = new() { Sha256 = Convert.ToHexStringLower(SHA256.HashData(adapter)), SizeBytes = (ulong)adapter.Length };
    private int _downloads;

    public int Downloads => Volatile.Read(ref _downloads);

    public LyingRound Open(LyingRoundPlan plan)
    {
        var round = new LyingRound(plan, federation, signer, _adapter, dimension);
        lock (_lock)
        {
            if (_rounds.Remove((plan.RunId, plan.Round), out LyingRound? replaced))
            {
                replaced.Dispose();
            }
            _rounds[(plan.RunId, plan.Round)] = round;
        }
        return round;
    }

    public void Invite(string client, RoundRef round) => Invitations(client).Writer.TryWrite(round);

    public override Task<RegisterResponse> Register(RegisterRequest request, ServerCallContext context) => Task.FromResult(new RegisterResponse
    {
        ClientId = Caller(context).Name,
        HeartbeatIntervalSeconds = 1,
        ServerTime = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
    });

    public override async Task<HeartbeatResponse> Heartbeat(HeartbeatRequest request, ServerCallContext context)
    {
        // A short long poll, so an invitation reaches the edge without waiting out its heartbeat interval.
        Channel<RoundRef> invitations = Invitations(Caller(context).Name);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        wait.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            return new HeartbeatResponse { HeartbeatIntervalSeconds = 1, Invitation = await invitations.Reader.ReadAsync(wait.Token) };
        }
        catch (OperationCanceledException) when (!context.CancellationToken.IsCancellationRequested)
        {
            return new HeartbeatResponse { HeartbeatIntervalSeconds = 1 };
        }
    }

    public override Task<GetRoundManifestResponse> GetRoundManifest(GetRoundManifestRequest request, ServerCallContext context) =>
        Task.FromResult(Find(request.Round).Manifest(Caller(context).Name));

    public override Task<DeclineRoundResponse> DeclineRound(DeclineRoundRequest request, ServerCallContext context)
    {
        Find(request.Round).Decline(Caller(context).Name, request);
        return Task.FromResult(new DeclineRoundResponse());
    }

    public override async Task DownloadAdapter(DownloadAdapterRequest request, IServerStreamWriter<AdapterChunk> responseStream, ServerCallContext context)
    {
        if (request.Sha256 != _adapter.Sha256)
        {
            throw new RpcException(new Status(StatusCode.NotFound, $"adapter {request.Sha256} is not stored here"));
        }
        Interlocked.Increment(ref _downloads);
        await responseStream.WriteAsync(new AdapterChunk
        {
            Offset = 0, TotalSize = (ulong)adapter.Length, Data = Google.Protobuf.ByteString.CopyFrom(adapter),
            Sha256 = _adapter.Sha256, CmsSignature = Google.Protobuf.ByteString.CopyFrom(adapterSignature),
        }, context.CancellationToken);
    }

    public override Task<AdvertiseKeysResponse> AdvertiseKeys(AdvertiseKeysRequest request, ServerCallContext context)
    {
        (string name, byte[] certificate) = Caller(context);
        return Find(request.Round).AdvertiseAsync(name, certificate, request, context.CancellationToken);
    }

    public override Task<ShareKeysResponse> ShareKeys(ShareKeysRequest request, ServerCallContext context) =>
        Find(request.Round).ShareAsync(Caller(context).Name, request, context.CancellationToken);

    public override async Task<UploadMaskedInputResponse> UploadMaskedInput(IAsyncStreamReader<MaskedInputChunk> requestStream, ServerCallContext context)
    {
        var bytes = new List<byte>();
        RoundRef? round = null;
        while (await requestStream.MoveNext(context.CancellationToken))
        {
            round ??= requestStream.Current.Round;
            bytes.AddRange(requestStream.Current.Data);
        }
        if (round is null || bytes.Count % 4 != 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "an upload must name its round and hold whole ring elements"));
        }
        var vector = new uint[bytes.Count / 4];
        Wire.SecAggWire.ReadElements(bytes.ToArray(), vector);
        return await Find(round).UploadAsync(Caller(context).Name, vector, context.CancellationToken);
    }

    public override Task<ConfirmSurvivorsResponse> ConfirmSurvivors(ConfirmSurvivorsRequest request, ServerCallContext context) =>
        Find(request.Round).ConfirmAsync(Caller(context).Name, request.Signature.ToByteArray(), context.CancellationToken);

    public override Task<UnmaskResponse> Unmask(UnmaskRequest request, ServerCallContext context)
    {
        Find(request.Round).Reveal(Caller(context).Name, request);
        return Task.FromResult(new UnmaskResponse());
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (LyingRound round in _rounds.Values)
            {
                round.Dispose();
            }
            _rounds.Clear();
        }
        signer.Dispose();
    }

    private Channel<RoundRef> Invitations(string client)
    {
        lock (_lock)
        {
            if (!_invitations.TryGetValue(client, out Channel<RoundRef>? channel))
            {
                _invitations[client] = channel = Channel.CreateUnbounded<RoundRef>();
            }
            return channel;
        }
    }

    private LyingRound Find(RoundRef? round)
    {
        lock (_lock)
        {
            return round is not null && _rounds.TryGetValue((round.RunId, round.Round), out LyingRound? found)
                ? found
                : throw new RpcException(new Status(StatusCode.FailedPrecondition, $"no round {round?.Round} of run '{round?.RunId}' here"));
        }
    }

    private static (string Name, byte[] Certificate) Caller(ServerCallContext context)
    {
        X509Certificate2 certificate = context.GetHttpContext().Connection.ClientCertificate
            ?? throw new RpcException(new Status(StatusCode.Unauthenticated, "no client certificate"));
        return (certificate.GetNameInfo(X509NameType.SimpleName, forIssuer: false), certificate.RawData);
    }
}
