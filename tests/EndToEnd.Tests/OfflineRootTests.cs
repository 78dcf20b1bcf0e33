using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Aggregation.SecureAggregation;
using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Cli;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Spectre.Console.Cli;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// The root CA key off the coordinator host: serve runs rounds and renews client certificates through the constrained
/// intermediate with no root key anywhere, refuses renewal without an intermediate, and still loads a single-CA folder
/// of the old layout (ca.key beside ca.crt) without ever reading that key.
/// </summary>
public sealed class OfflineRootTests : IDisposable
{
    private const int Length = 64;
    private static readonly string[] s_clients = ["alice", "bob", "carol"];

    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-offline-root-" + Guid.NewGuid().ToString("N"));

    private string Pki => Path.Combine(_root, "pki");

    [Fact]
    public async Task Serve_RootKeyGoneFromTheHost_RenewsThroughTheIntermediateAndRunsARoundWithTheRenewedClient()
    {
        string offline = Path.Combine(_root, "offline-root");
        using (FederationPki authority = FederationPki.CreateCa(Pki, TimeProvider.System, offline, renewalIntermediate: true))
        {
            authority.IssueServer(Pki, [], password: null);
            authority.IssueAdapterSigner(Pki, password: null);
            foreach (string name in s_clients)
            {
                authority.IssueIdentity(Pki, name, FederationRole.Client, password: null);
            }
        }
        // The officer carried the root away: no copy of its key is left anywhere serve could reach.
        Directory.Delete(offline, recursive: true);
        Assert.False(File.Exists(Path.Combine(Pki, FederationPki.CaKeyFile)));
        var logs = new CapturedLogs();

        await using CoordinatorHost host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(_root, "state.db") },
            logging => logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        await host.StartAsync(CancellationToken.None);

        string renewed = Path.Combine(_root, "carol-renewed.pfx");
        Assert.Equal(0, await RenewAsync(host, "carol", renewed));
        using (X509Certificate2 certificate = X509CertificateLoader.LoadPkcs12FromFile(renewed, password: null))
        using (X509Certificate2 intermediate = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(Pki, FederationPki.IntermediateName + ".crt")))
        {
            Assert.Equal(intermediate.SubjectName.Name, certificate.IssuerName.Name);
        }
        Assert.DoesNotContain(logs.Lines, l => l.EventId == 1006);

        // A SecAgg+ round in which carol takes part with the renewed certificate: the coordinator's TLS check and
        // every peer's roster check accept a client chain through the intermediate.
        var identities = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["alice"] = Path.Combine(Pki, "alice.pfx"),
            ["bob"] = Path.Combine(Pki, "bob.pfx"),
            ["carol"] = renewed,
        };
        var owned = new List<IDisposable>();
        try
        {
            var connections = new Dictionary<string, CoordinatorConnection>(StringComparer.Ordinal);
            foreach ((string name, string path) in identities)
            {
                var identity = EdgeIdentity.Load(path, Path.Combine(Pki, FederationPki.CaCertificateFile));
                owned.Add(identity);
                var connection = new CoordinatorConnection(host.Address, identity);
                owned.Add(connection);
                connections[name] = connection;
                await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            }
            int minSurvivors = RunPlanValidation.DefaultThreshold(s_clients.Length);
            (int degree, int threshold) = RoundGraph.Choose(s_clients.Length, minSurvivors);
            SecAggRound round = host.Rounds.Start(new SecAggRoundPlan("offline-root", 1, s_clients, Length, 32, degree, threshold, TimeSpan.FromSeconds(30), MinSurvivors: minSurvivors));
            try
            {
                Dictionary<string, uint[]> inputs = s_clients.ToDictionary(n => n, _ => RandomVector());
                Task<ParticipationOutcome>[] running = [.. s_clients.Select(n => ParticipateAsync(connections[n], n, inputs[n], round.Ref))];

                uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromSeconds(120));

                Assert.Equal(Sum(inputs.Values), sum);
                Assert.Equal(RoundStage.Completed, round.Stage);
                await Task.WhenAll(running);
            }
            finally
            {
                host.Rounds.Finish(round);
            }
        }
        finally
        {
            foreach (IDisposable item in owned.AsEnumerable().Reverse())
            {
                item.Dispose();
            }
        }
    }

    [Fact]
    public async Task Serve_OldSingleCaFolderWithCaKey_LoadsWithOneWarningNeverReadsTheKeyAndRefusesRenewal()
    {
        FederationPki.CreateFederation(Pki, ["alice"], TimeProvider.System);
        // Whatever lies in ca.key, serve must not need it: a file it tried to parse would stop the start.
        string rootKey = Path.Combine(Pki, FederationPki.CaKeyFile);
        File.WriteAllText(rootKey, "not a key: serve must never open this file\n");
        var logs = new CapturedLogs();

        await using CoordinatorHost host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(_root, "state.db") },
            logging => logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        await host.StartAsync(CancellationToken.None);

        (int EventId, string Message) warning = Assert.Single(logs.Lines, l => l.EventId == 1006);
        Assert.Contains(rootKey, warning.Message, StringComparison.Ordinal);
        Assert.Contains("--root-key", warning.Message, StringComparison.Ordinal);
        using EdgeIdentity alice = EdgeIdentity.Load(Path.Combine(Pki, "alice.pfx"), Path.Combine(Pki, FederationPki.CaCertificateFile));
        using var connection = new CoordinatorConnection(host.Address, alice);
        RegisterResponse registered = await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None);
        Assert.Equal("alice", registered.ClientId);

        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        byte[] csr = new CertificateRequest(alice.Certificate.SubjectName, key, HashAlgorithmName.SHA256).CreateSigningRequest();
        var client = new IdentityService.IdentityServiceClient(connection.Channel);
        var refused = await Assert.ThrowsAsync<RpcException>(() => client.RenewAsync(new RenewRequest { Csr = ByteString.CopyFrom(csr) }, connection.Call(CancellationToken.None)).ResponseAsync);

        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.Contains("renewal needs a renewal intermediate", refused.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Renew_IntermediateRevokedByTheRoot_RefusedAndItsCertificatesNoLongerConnect()
    {
        FederationPki.CreateFederation(Pki, ["alice"], TimeProvider.System, renewalIntermediate: true);
        await using CoordinatorHost host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(_root, "state.db") },
            logging => logging.SetMinimumLevel(LogLevel.Warning));
        await host.StartAsync(CancellationToken.None);
        string renewed = Path.Combine(_root, "alice-renewed.pfx");
        Assert.Equal(0, await RenewAsync(host, "alice", renewed));

        using (FederationPki root = FederationPki.Load(Pki, TimeProvider.System))
        {
            root.RevokeIntermediates();
        }

        using EdgeIdentity alice = EdgeIdentity.Load(Path.Combine(Pki, "alice.pfx"), Path.Combine(Pki, FederationPki.CaCertificateFile));
        using var connection = new CoordinatorConnection(host.Address, alice);
        using ECDsa key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        byte[] csr = new CertificateRequest(alice.Certificate.SubjectName, key, HashAlgorithmName.SHA256).CreateSigningRequest();
        var client = new IdentityService.IdentityServiceClient(connection.Channel);
        var refused = await Assert.ThrowsAsync<RpcException>(() => client.RenewAsync(new RenewRequest { Csr = ByteString.CopyFrom(csr) }, connection.Call(CancellationToken.None)).ResponseAsync);
        Assert.Equal(StatusCode.FailedPrecondition, refused.StatusCode);
        Assert.Contains("renewal intermediate is revoked", refused.Status.Detail, StringComparison.Ordinal);

        using EdgeIdentity renewedAlice = EdgeIdentity.Load(renewed, Path.Combine(Pki, FederationPki.CaCertificateFile));
        using var stale = new CoordinatorConnection(host.Address, renewedAlice, new ConnectionOptions { MaxRetries = 1, InitialBackoff = TimeSpan.FromMilliseconds(10) });
        await Assert.ThrowsAnyAsync<RpcException>(() => stale.RegisterAsync(new RegisterRequest { ClientVersion = "test" }, CancellationToken.None));
    }

    private static async Task<int> RenewAsync(CoordinatorHost host, string name, string output)
    {
        var app = new CommandApp();
        app.Configure(config =>
        {
            config.PropagateExceptions();
            EdgeClientCommands.Configure(config);
        });
        return await app.RunAsync(["renew", "--identity", Path.Combine(Path.GetDirectoryName(output)!, "pki", name + ".pfx"),
            "--ca", Path.Combine(Path.GetDirectoryName(output)!, "pki", FederationPki.CaCertificateFile), "--coordinator", host.Address.ToString(), "--out", output]);
    }

    private static async Task<ParticipationOutcome> ParticipateAsync(CoordinatorConnection connection, string name, uint[] input, RoundRef expected)
    {
        HeartbeatResponse heartbeat = await connection.HeartbeatAsync(new HeartbeatRequest { Available = true }, CancellationToken.None);
        Assert.Equal(expected, heartbeat.Invitation);
        var participant = new SecAggParticipant(connection, name);
        RoundManifest manifest = await participant.FetchManifestAsync(heartbeat.Invitation, CancellationToken.None);
        return await participant.ParticipateAsync(manifest, (_, _) => Task.FromResult<uint[]>([.. input]), CancellationToken.None);
    }

    private static uint[] RandomVector()
    {
        byte[] bytes = RandomNumberGenerator.GetBytes(4 * Length);
        return [.. Enumerable.Range(0, Length).Select(i => BitConverter.ToUInt32(bytes, 4 * i))];
    }

    private static uint[] Sum(IEnumerable<uint[]> vectors)
    {
        var sum = new uint[Length];
        foreach (uint[] v in vectors)
        {
            for (int i = 0; i < Length; i++)
            {
                sum[i] = unchecked(sum[i] + v[i]);
            }
        }
        return sum;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }
}
