using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Trust;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// Revocation and expiry as the edge sees them over the wire: the CA-signed CRL travels in the round manifest, and the
/// adapter signer, the coordinator's certificate and the CRL number are checked before anything is loaded or trained.
/// </summary>
public sealed class RevocationTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Worker_RevokedAdapterSigner_DeclinesCertificateRevokedLoadsAndTrainsNothing()
    {
        byte[] blob = RandomNumberGenerator.GetBytes(2000);
        string sha256 = coordinator.Host.Adapters.Put(blob, "revoked-signer-run", 0);
        TestFederation.Open(coordinator.Pki).Revoke(TestFederation.AdapterSignerName);

        using var edge = new RoundEdge(coordinator, "revoked-signer-run", new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)blob.Length });
        RoundWorkResult result = await edge.HandleAsync(revocation: null);

        Assert.False(result.Participated);
        Assert.Equal(EdgeRevocationList.RevokedRule, result.DeclinedRule);
        Assert.Contains("signer is revoked", result.Message, StringComparison.Ordinal);
        Assert.Null(edge.Model.Lora);
        Assert.Empty(edge.Ledger.Charges);
        Assert.Equal(ParticipantStatus.Declined, coordinator.Host.State.Rounds.Participants("revoked-signer-run", 1)["alice"]);
        Assert.Contains(coordinator.Host.State.Audit.Read(1, 100_000).Entries, e =>
            e.CanonicalJson.Contains("\"rule\":\"certificate_revoked\"", StringComparison.Ordinal) && e.CanonicalJson.Contains("revoked-signer-run", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Worker_ManifestCrlOlderThanTheOneKept_DeclinesCrlRollback()
    {
        // The coordinator serves its crl.pem (some low number); this edge has already seen number 1000 from the same CA.
        TestFederation.Open(coordinator.Pki).Revoke("dave");
        string kept = Path.Combine(coordinator.Root, "rollback-" + EdgeRevocationList.FileName);
        using (X509Certificate2 ca = X509Certificate2.CreateFromPemFile(coordinator.CaPath, Path.Combine(coordinator.Pki, FederationPki.CaKeyFile)))
        {
            File.WriteAllText(kept, RevocationList.ToPem(new CertificateRevocationListBuilder().Build(ca, new BigInteger(1000), DateTimeOffset.UtcNow.AddDays(1), HashAlgorithmName.SHA256)));
        }
        byte[] blob = RandomNumberGenerator.GetBytes(2000);
        string sha256 = coordinator.Host.Adapters.Put(blob, "rollback-run", 0);

        using var edge = new RoundEdge(coordinator, "rollback-run", new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)blob.Length });
        RoundWorkResult result = await edge.HandleAsync(kept);

        Assert.False(result.Participated);
        Assert.Equal(EdgeRevocationList.RollbackRule, result.DeclinedRule);
        Assert.Contains("older than number 1000", result.Message, StringComparison.Ordinal);
        Assert.Null(edge.Model.Lora);
        Assert.Empty(edge.Ledger.Charges);
        Assert.Equal(ParticipantStatus.Declined, coordinator.Host.State.Rounds.Participants("rollback-run", 1)["alice"]);
    }

    [Fact]
    public async Task Call_CoordinatorCertificateExpiresWhileConnected_RefusedBeforeTheCall()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("erin"), coordinator.CaPath);
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var connection = new CoordinatorConnection(coordinator.Address, identity, time: clock);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);

        clock.SetUtcNow(new DateTimeOffset(connection.ServerCertificate!.NotAfter.ToUniversalTime(), TimeSpan.Zero).AddMinutes(1));

        var refused = await Assert.ThrowsAsync<CoordinatorRefusedException>(() => connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None));
        Assert.Equal(EdgeRevocationList.ExpiredRule, refused.Rule);
        Assert.Contains("expired at", refused.Message, StringComparison.Ordinal);
    }
}

/// <summary>The coordinator's own TLS certificate revoked (a fixture of its own: every later manifest would carry that CRL).</summary>
public sealed class CoordinatorRevocationTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Worker_CoordinatorCertificateRevoked_RefusedSendsNothingMoreAndTheNextHandshakeFails()
    {
        byte[] blob = RandomNumberGenerator.GetBytes(2000);
        string sha256 = coordinator.Host.Adapters.Put(blob, "revoked-server-run", 0);
        TestFederation.Open(coordinator.Pki).Revoke(TestFederation.ServerName);
        string kept = Path.Combine(coordinator.Root, "server-" + EdgeRevocationList.FileName);

        using (var edge = new RoundEdge(coordinator, "revoked-server-run", new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)blob.Length }))
        {
            RoundWorkResult result = await edge.HandleAsync(kept);

            Assert.False(result.Participated);
            Assert.Equal(EdgeRevocationList.RevokedRule, result.DeclinedRule);
            Assert.Contains("coordinator's certificate is refused", result.Message, StringComparison.Ordinal);
            Assert.Null(edge.Model.Lora);
            Assert.Empty(edge.Ledger.Charges);
            // Not even a decline went to the revoked coordinator, and the open connection makes no further call.
            Assert.Equal(ParticipantStatus.Selected, coordinator.Host.State.Rounds.Participants("revoked-server-run", 1)["alice"]);
            var refused = await Assert.ThrowsAsync<CoordinatorRefusedException>(() => edge.Connection!.HeartbeatAsync(new HeartbeatRequest(), CancellationToken.None));
            Assert.Equal(EdgeRevocationList.RevokedRule, refused.Rule);
        }

        // A new connection with the kept CRL refuses the coordinator at the TLS handshake.
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        string? handshakeRefusal = null;
        using var fresh = new CoordinatorConnection(coordinator.Address, identity,
            new ConnectionOptions { MaxRetries = 1, InitialBackoff = TimeSpan.FromMilliseconds(5), MaximumBackoff = TimeSpan.FromMilliseconds(10), Logger = new ReasonLogger(r => handshakeRefusal = r) },
            revocation: EdgeRevocationList.Open(kept, identity.Ca));
        await Assert.ThrowsAsync<RpcException>(() => fresh.RegisterAsync(new RegisterRequest(), CancellationToken.None));
        Assert.Contains("is revoked", handshakeRefusal, StringComparison.Ordinal);
    }

    private sealed class ReasonLogger(Action<string> reason) : Microsoft.Extensions.Logging.ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;

        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            reason(formatter(state, exception));
    }
}

/// <summary>The coordinator refuses calls on a connection whose client certificate expired since the handshake (its clock is a FakeTimeProvider).</summary>
public sealed class ClientExpiryTests : IAsyncLifetime
{
    private readonly TempDirectory _root = new();
    private readonly FakeTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private CoordinatorHost? _host;

    public async Task InitializeAsync()
    {
        TestFederation.Create(_root.File("pki"), ["alice"]);
        _host = CoordinatorHost.Create(new CoordinatorOptions { Pki = _root.File("pki"), Port = 0, Address = "127.0.0.1", State = _root.File("state.db") },
            logging => { }, _clock);
        await _host.StartAsync(CancellationToken.None);
    }

    [Fact]
    public async Task Call_ClientCertificateExpiresWhileConnected_UnauthenticatedNamingTheExpiry()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(Path.Combine(_root.File("pki"), "alice.pfx"), Path.Combine(_root.File("pki"), "ca.crt"));
        using var connection = new CoordinatorConnection(_host!.Address, identity);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);

        _clock.SetUtcNow(new DateTimeOffset(identity.Certificate.NotAfter.ToUniversalTime(), TimeSpan.Zero).AddMinutes(1));

        var ex = await Assert.ThrowsAsync<RpcException>(() => connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None));
        Assert.Equal(StatusCode.Unauthenticated, ex.StatusCode);
        Assert.Contains("expired at", ex.Status.Detail, StringComparison.Ordinal);
    }

    public async Task DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }
        _root.Dispose();
    }
}

/// <summary>One edge ("alice") driven through one round of <paramref name="runId"/> against the fixture's coordinator, on a tiny model.</summary>
internal sealed class RoundEdge(CoordinatorFixture coordinator, string runId, AdapterRef adapter) : IDisposable
{
    private EdgeIdentity? _identity;
    private LlamaForCausalLM? _model;
    private LocalPrivacyLedger? _ledger;

    public LlamaForCausalLM Model => _model ?? throw new InvalidOperationException("no round was handled");

    public LocalPrivacyLedger Ledger => _ledger ?? throw new InvalidOperationException("no round was handled");

    public CoordinatorConnection? Connection { get; private set; }

    /// <param name="revocation">Where the edge keeps its CRL; null keeps it for the connection only.</param>
    public async Task<RoundWorkResult> HandleAsync(string? revocation)
    {
        coordinator.Host.State.Runs.Create(runId, [1], "default", 1, 1, adapter.Sha256, "engineer");
        var dp = new DpParameters
        {
            Mechanism = NoiseMechanism.DistributedSkellam, ClipNorm = 1, NoiseMultiplier = 1, Scale = 1, Delta = 1e-6,
            RotationSeed = Google.Protobuf.ByteString.CopyFrom(new byte[32]),
        };
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan(runId, 1, ["alice", "bob"], 16, 32, Degree: 1, Threshold: 2,
            StageTimeout: TimeSpan.FromSeconds(30)), new RoundInstructions(dp, adapter, LocalSteps: 1, LearningRate: 0.01, EpsilonAfterRound: 1));
        try
        {
            coordinator.Host.State.Rounds.Start(runId, 1, round.Indices, adapter.Sha256);
            string model = Path.Combine(coordinator.Root, runId + "-tiny");
            TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: ByteLevelTokenizerWriter.Write(model)), seed: 3);
            _model = LlamaForCausalLM.FromPretrained(model, TorchSharp.torch.CPU);
            _identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
            Connection = new CoordinatorConnection(coordinator.Address, _identity,
                revocation: revocation is null ? null : EdgeRevocationList.Open(revocation, _identity.Ca));
            await Connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            _ledger = LocalPrivacyLedger.Open(Path.Combine(coordinator.Root, runId + "-" + LocalPrivacyLedger.FileName));
            var policy = new LocalPolicy
            {
                Delta = 1e-5, MaxEpsilonPerRun = 100, MaxEpsilonLifetime = 1000, MinNoiseMultiplier = 0.1,
                AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam], AllowedTargetModules = ["q_proj", "v_proj"], MaxRank = 16, MaxRoundsPerDay = 100,
            };
            var worker = new EdgeRoundWorker(Connection, "alice", _model, [], new LocalPolicyGate(policy, _ledger, TimeProvider.System));
            return await worker.HandleAsync(round.Ref, CancellationToken.None);
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    public void Dispose()
    {
        Connection?.Dispose();
        _ledger?.Dispose();
        _model?.Dispose();
        _identity?.Dispose();
    }
}
