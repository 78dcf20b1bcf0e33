using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Trust;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// A real coordinator on 127.0.0.1 with an ephemeral port and certificates made by the PKI code: a client
/// "alice", the engineer and officer of `pki init`, and a client "mallory" from another CA.
/// </summary>
public sealed class CoordinatorFixture : IAsyncLifetime
{
    private CoordinatorHost? _host;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "federated-e2e-" + Guid.NewGuid().ToString("N"));

    public string Pki => Path.Combine(Root, "pki");

    public string CaPath => Path.Combine(Pki, FederationPki.CaCertificateFile);

    public string RoguePki => Path.Combine(Root, "rogue");

    internal CapturedLogs Logs { get; } = new();

    internal CoordinatorHost Host => _host ?? throw new InvalidOperationException("the coordinator has not started");

    public Uri Address => Host.Address;

    public string Identity(string name) => Path.Combine(Pki, name + ".pfx");

    public async Task InitializeAsync()
    {
        TestFederation.Create(Pki, ["alice", "bob", "carol", "dave", "erin"]);
        using (FederationPki rogue = FederationPki.CreateCa(RoguePki, TimeProvider.System))
        {
            rogue.IssueIdentity(RoguePki, "mallory", FederationRole.Client, password: null);
        }
        _host = CoordinatorHost.Create(
            new CoordinatorOptions { Pki = Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(Root, "state.db"), HeartbeatIntervalSeconds = 1 },
            logging => logging.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug));
        await _host.StartAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Left for the OS temp cleaner.
        }
    }
}
