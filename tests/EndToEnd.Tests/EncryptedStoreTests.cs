using System.Text;
using Federated.Coordinator;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.Storage;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Trust;
using Federated.Wire;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Federated.EndToEnd.Tests;

/// <summary>A real coordinator started with an at-rest key and a retention period, serving a real global adapter checkpoint over mutual TLS.</summary>
public sealed class EncryptedStoreTests : IAsyncLifetime
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "federated-e2e-enc-" + Guid.NewGuid().ToString("N"));
    private CoordinatorHost? _host;

    private string Pki => Path.Combine(_root, "pki");

    public async Task InitializeAsync()
    {
        using (FederationPki pki = FederationPki.CreateCa(Pki, TimeProvider.System))
        {
            pki.IssueServer(Pki, [], password: null);
            pki.IssueAdapterSigner(Pki, password: null);
            pki.IssueIdentity(Pki, "alice", FederationRole.Client, password: null);
        }
        AtRestCipher.CreateKeyFile(Path.Combine(Pki, AtRestCipher.DefaultFileName));
        _host = CoordinatorHost.Create(
            new CoordinatorOptions
            {
                Pki = Pki, Port = 0, Address = "127.0.0.1", State = Path.Combine(_root, "state", "state.db"),
                AtRestKey = Path.Combine(Pki, AtRestCipher.DefaultFileName), RetentionDays = 30,
            },
            logging => logging.SetMinimumLevel(LogLevel.Warning));
        await _host.StartAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.DisposeAsync();
        }
        Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public async Task Serve_WithAtRestKey_CheckpointIsCiphertextOnDiskAndArrivesSignedAndIntact()
    {
        string model = Path.Combine(_root, "tiny");
        TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: ByteLevelTokenizerWriter.Write(model)), seed: 2);
        byte[] checkpoint = GlobalAdapter.Create(model, new LoraSettings(Rank: 2, Alpha: 4, TargetModules: ["q_proj"], InitSeed: 9)).Serialize();
        CoordinatorHost host = _host!;

        string sha256 = host.Adapters.Put(checkpoint, "enc-run", 0);

        string file = Assert.Single(Directory.GetFiles(Path.Combine(_root, "state", "adapters")));
        Assert.EndsWith(".adapter.enc", file, StringComparison.Ordinal);
        string onDisk = Encoding.Latin1.GetString(File.ReadAllBytes(file));
        Assert.Contains("lora_B", Encoding.Latin1.GetString(checkpoint), StringComparison.Ordinal);
        foreach (string plaintext in new[] { "lora_B", "lora_A", "__metadata__", GlobalAdapterBlob.ConfigMetadataKey, "data_offsets" })
        {
            Assert.DoesNotContain(plaintext, onDisk, StringComparison.Ordinal);
        }
        using EdgeIdentity identity = EdgeIdentity.Load(Path.Combine(Pki, "alice.pfx"), Path.Combine(Pki, FederationPki.CaCertificateFile));
        using var connection = new CoordinatorConnection(host.Address, identity);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        byte[] downloaded = await AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)checkpoint.Length }, CancellationToken.None);
        Assert.Equal(checkpoint, downloaded);
        // The retention pass runs in the host; a fresh checkpoint is far inside the 30 days.
        RetentionResult pass = host.Services.GetRequiredService<RetentionPruner>().PruneNow()!;
        Assert.Empty(pass.Adapters);
        Assert.True(File.Exists(file));
    }
}
