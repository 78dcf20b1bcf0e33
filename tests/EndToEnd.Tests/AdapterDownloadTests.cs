using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Federated.Coordinator.Pki;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Model;
using Federated.Training.Provenance;
using Federated.Training.Tokenization;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

public sealed class AdapterDownloadTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task Download_MultiChunkAdapter_ArrivesIntactWithVerifiedSignature()
    {
        byte[] adapter = RandomNumberGenerator.GetBytes((5 << 19) + 17); // 2.5 MiB + 17: three chunks, the last partial
        string sha256 = coordinator.Host.Adapters.Put(adapter, "adapter-run", 0);
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);

        byte[] downloaded = await AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)adapter.Length }, CancellationToken.None);

        Assert.Equal(adapter, downloaded);
        Assert.Contains(coordinator.Host.State.Audit.Read(1, 10_000).Entries, e => e.CanonicalJson.Contains(sha256, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Download_AdapterEditedOnDisk_RefusedByClient()
    {
        byte[] adapter = RandomNumberGenerator.GetBytes(4096);
        string sha256 = coordinator.Host.Adapters.Put(adapter, "tamper-run", 0);
        string file = Directory.GetFiles(coordinator.Root, sha256 + ".adapter", SearchOption.AllDirectories).Single();
        byte[] onDisk = File.ReadAllBytes(file);
        onDisk[100] ^= 1;
        File.WriteAllBytes(file, onDisk);
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest(), CancellationToken.None);

        var ex = await Assert.ThrowsAsync<InvalidDataException>(() =>
            AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)adapter.Length }, CancellationToken.None));

        Assert.Contains("hashes to", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Download_OneByteChangedUnderAConsistentHash_RefusedBySignature()
    {
        // A lying coordinator: it serves a changed adapter under the changed bytes' own hash, with the original's signature.
        byte[] original = RandomNumberGenerator.GetBytes(4096);
        string originalSha = coordinator.Host.Adapters.Put(original, "forge-run", 0);
        byte[] signature = coordinator.Host.State.AdapterRecords.Get(originalSha)!.Value.Signature;
        byte[] changed = (byte[])original.Clone();
        changed[2048] ^= 0x01;
        AdapterRef served = ServeForged(changed, signature);

        var ex = await Assert.ThrowsAsync<AdapterSignatureException>(() => DownloadAsAsync("dave", served));

        Assert.Contains("changed after signing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Download_Unsigned_Refused()
    {
        AdapterRef served = ServeForged(RandomNumberGenerator.GetBytes(1000), []);

        var ex = await Assert.ThrowsAsync<AdapterSignatureException>(() => DownloadAsAsync("dave", served));

        Assert.Contains("unsigned", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Download_SignedByAnotherCasCodeSigningCertificate_Refused()
    {
        string folder = Path.Combine(coordinator.Root, "rogue-signer-" + Guid.NewGuid().ToString("N"));
        using (FederationPki rogue = FederationPki.Load(coordinator.RoguePki, TimeProvider.System))
        {
            rogue.IssueAdapterSigner(folder, password: null);
        }
        using X509Certificate2 rogueSigner = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(folder, FederationPki.AdapterSignerName + ".pfx"), null);
        byte[] adapter = RandomNumberGenerator.GetBytes(1000);
        AdapterRef served = ServeForged(adapter, AdapterSignature.SignFile(adapter, "adapter_model.safetensors", rogueSigner));

        var ex = await Assert.ThrowsAsync<AdapterSignatureException>(() => DownloadAsAsync("erin", served));

        Assert.Contains("does not chain to the federation CA", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Download_SignedByTheServerTlsCertificate_RefusedForLackOfCodeSigning()
    {
        using X509Certificate2 server = X509CertificateLoader.LoadPkcs12FromFile(Path.Combine(coordinator.Pki, FederationPki.ServerName + ".pfx"), null);
        byte[] adapter = RandomNumberGenerator.GetBytes(1000);
        AdapterRef served = ServeForged(adapter, AdapterSignature.SignFile(adapter, "adapter_model.safetensors", server));

        var ex = await Assert.ThrowsAsync<AdapterSignatureException>(() => DownloadAsAsync("erin", served));

        Assert.Contains("code-signing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Worker_UnsignedGlobalAdapterInARound_DeclinesNamingTheRuleLoadsAndTrainsNothingAndTheCoordinatorRecordsIt()
    {
        AdapterRef forged = ServeForged(RandomNumberGenerator.GetBytes(2000), []);
        coordinator.Host.State.Runs.Create("forged-run", [1], "default", 1, 1, forged.Sha256, "engineer");
        var dp = new DpParameters
        {
            Mechanism = NoiseMechanism.DistributedSkellam, ClipNorm = 1, NoiseMultiplier = 1, Scale = 1, Delta = 1e-6,
            RotationSeed = Google.Protobuf.ByteString.CopyFrom(new byte[32]),
        };
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("forged-run", 1, ["alice", "bob"], 16, 32, Degree: 1, Threshold: 2,
            StageTimeout: TimeSpan.FromSeconds(30)), new RoundInstructions(dp, forged, LocalSteps: 1, LearningRate: 0.01, EpsilonAfterRound: 1));
        try
        {
            coordinator.Host.State.Rounds.Start("forged-run", 1, round.Indices, forged.Sha256);
            string model = Path.Combine(coordinator.Root, "forged-tiny");
            TinyLlamaFactory.Write(model, TinyLlamaFactory.DefaultConfig(vocabSize: ByteLevelTokenizerWriter.Write(model)), seed: 3);
            using LlamaForCausalLM local = LlamaForCausalLM.FromPretrained(model, TorchSharp.torch.CPU);
            using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
            using var connection = new CoordinatorConnection(coordinator.Address, identity);
            await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
            using LocalPrivacyLedger ledger = LocalPrivacyLedger.Open(Path.Combine(coordinator.Root, "forged-" + LocalPrivacyLedger.FileName));
            var policy = new LocalPolicy
            {
                Delta = 1e-5, MaxEpsilonPerRun = 100, MaxEpsilonLifetime = 1000, MinNoiseMultiplier = 0.1,
                AllowedMechanisms = [NoiseMechanismKind.DistributedSkellam], AllowedTargetModules = ["q_proj", "v_proj"], MaxRank = 16, MaxRoundsPerDay = 100,
            };
            var worker = new EdgeRoundWorker(connection, "alice", local, [], new LocalPolicyGate(policy, ledger, TimeProvider.System));

            RoundWorkResult result = await worker.HandleAsync(round.Ref, CancellationToken.None);

            Assert.False(result.Participated);
            Assert.Equal("adapter_signature", result.DeclinedRule);
            Assert.Contains("unsigned", result.Message, StringComparison.Ordinal);
            Assert.Null(local.Lora);
            Assert.Empty(ledger.Charges);
            Assert.Equal(ParticipantStatus.Declined, coordinator.Host.State.Rounds.Participants("forged-run", 1)["alice"]);
            Assert.Contains(coordinator.Host.State.Audit.Read(1, 100_000).Entries, e =>
                e.CanonicalJson.Contains("\"rule\":\"adapter_signature\"", StringComparison.Ordinal) && e.CanonicalJson.Contains("forged-run", StringComparison.Ordinal));
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    /// <summary>Plants a blob and a signature of the test's choosing in the coordinator's store, as an attacker with its disk would.</summary>
    private AdapterRef ServeForged(byte[] content, byte[] signature)
    {
        string sha256 = Convert.ToHexStringLower(SHA256.HashData(content));
        File.WriteAllBytes(Path.Combine(coordinator.Root, "adapters", sha256 + ".adapter"), content);
        coordinator.Host.State.AdapterRecords.Record(new StoredAdapter(sha256, content.Length, signature), "forged-run", 0, "test");
        return new AdapterRef { Sha256 = sha256, SizeBytes = (ulong)content.Length };
    }

    private async Task<byte[]> DownloadAsAsync(string client, AdapterRef adapter)
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity(client), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest { ClientVersion = "test", Device = "cpu" }, CancellationToken.None);
        return await AdapterDownload.DownloadAsync(connection, adapter, CancellationToken.None);
    }

    [Fact]
    public async Task Download_UnknownOrMalformedHash_NotFoundOrInvalidArgument()
    {
        using EdgeIdentity identity = EdgeIdentity.Load(coordinator.Identity("carol"), coordinator.CaPath);
        using var connection = new CoordinatorConnection(coordinator.Address, identity);
        await connection.RegisterAsync(new RegisterRequest(), CancellationToken.None);

        var unknown = await Assert.ThrowsAsync<RpcException>(() =>
            AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = new string('a', 64), SizeBytes = 10 }, CancellationToken.None));
        var malformed = await Assert.ThrowsAsync<RpcException>(() =>
            AdapterDownload.DownloadAsync(connection, new AdapterRef { Sha256 = "../../etc/passwd", SizeBytes = 10 }, CancellationToken.None));

        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
        Assert.Equal(StatusCode.InvalidArgument, malformed.StatusCode);
    }
}
