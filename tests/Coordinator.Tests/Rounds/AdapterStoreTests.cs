using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Federated.Coordinator.Rounds;
using Federated.Coordinator.State;
using Federated.Coordinator.Tests.State;
using Federated.Coordinator.Storage;
using Federated.Training.Provenance;

namespace Federated.Coordinator.Tests.Rounds;

public sealed class AdapterStoreTests : IDisposable
{
    private const string HeaderJson =
        """{"__metadata__":{"federated.adapter_config":"{\"peft_type\":\"LORA\",\"r\":2}"},"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]}}""";

    private readonly TempDirectory _dir = new();
    private readonly X509Certificate2 _auditSigner = TestSigner.Create();
    private readonly X509Certificate2 _ca;
    private readonly AdapterSigner _signer;
    private TestStateDatabase? _database;
    private CoordinatorState _state = null!;

    public AdapterStoreTests()
    {
        (_ca, _signer) = TestAdapterSigner.Create(_dir.File("pki"));
    }

    private void Use(StateBackend backend)
    {
        _database = new TestStateDatabase(backend);
        _state = _database.Open(_auditSigner);
    }

    public void Dispose()
    {
        _state?.Dispose();
        _database?.Dispose();
        _signer.Dispose();
        _ca.Dispose();
        _auditSigner.Dispose();
        _dir.Dispose();
    }

    // The adapters here are runs' initial ones (round 0): a round's adapter is served only after its round completed
    // (CoordinatorStateTests covers that); encryption is the same for both.

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Put_WithKey_StoredBytesRevealNoPlaintextAndRoundTripUnderThePlaintextHash(StateBackend backend)
    {
        Use(backend);
        byte[] checkpoint = Checkpoint();
        using AtRestCipher cipher = Cipher("key-a");
        var store = TestStateDatabase.Adapters(_state, _signer, cipher);

        string sha256 = store.Put(checkpoint, "run-1", 0);

        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(checkpoint)), sha256);
        string file = Assert.Single(_database!.StoredAdapterNames());
        Assert.EndsWith(sha256 + ".adapter.enc", file, StringComparison.Ordinal);
        string onDisk = Encoding.Latin1.GetString(_database.ReadStoredAdapter(file));
        foreach (string plaintext in new[] { "__metadata__", "lora_B", "peft_type", "data_offsets", "F32", HeaderJson[..16] })
        {
            Assert.DoesNotContain(plaintext, onDisk, StringComparison.Ordinal);
        }
        Assert.Equal(checkpoint, store.Read(sha256));
        (Stream content, long size, byte[] signature) = store.Open(sha256)!.Value;
        content.Dispose();
        Assert.Equal(checkpoint.Length, size);
        AdapterSignature.VerifyFile(checkpoint, "adapter_model.safetensors", signature, _ca).Dispose();
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Open_WrongKey_RefusedNamingTheKeyAndCheckKeyStopsStartUp(StateBackend backend)
    {
        Use(backend);
        using AtRestCipher right = Cipher("key-a");
        using AtRestCipher wrong = Cipher("key-b");
        string sha256 = TestStateDatabase.Adapters(_state, _signer, right).Put(Checkpoint(), "run-1", 0);
        var store = TestStateDatabase.Adapters(_state, _signer, wrong);

        var read = Assert.Throws<AtRestDecryptionException>(() => store.Read(sha256));
        var startUp = Assert.Throws<AtRestDecryptionException>(store.CheckKey);

        Assert.Contains("another key", read.Message, StringComparison.Ordinal);
        Assert.Contains($"key id {right.KeyId}", startUp.Message, StringComparison.Ordinal);
        Assert.Contains(wrong.KeyId, startUp.Message, StringComparison.Ordinal);
        TestStateDatabase.Adapters(_state, _signer, right).CheckKey();
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Open_EncryptedButNoKeyConfigured_RefusedWithTheFlagToPass(StateBackend backend)
    {
        Use(backend);
        using AtRestCipher cipher = Cipher("key-a");
        string sha256 = TestStateDatabase.Adapters(_state, _signer, cipher).Put(Checkpoint(), "run-1", 0);
        var store = TestStateDatabase.Adapters(_state, _signer);

        Assert.Contains("--at-rest-key", Assert.Throws<AtRestDecryptionException>(() => store.Read(sha256)).Message, StringComparison.Ordinal);
        Assert.Contains("--at-rest-key", Assert.Throws<AtRestDecryptionException>(store.CheckKey).Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Open_CiphertextSwappedUnderAnotherHash_FailsAuthentication(StateBackend backend)
    {
        Use(backend);
        using AtRestCipher cipher = Cipher("key-a");
        var store = TestStateDatabase.Adapters(_state, _signer, cipher);
        byte[] first = Checkpoint();
        byte[] second = Checkpoint();
        second[^1] ^= 0x80;
        string a = store.Put(first, "run-1", 0);
        string b = store.Put(second, "run-2", 0);
        _database!.WriteStoredAdapter($"{b}.adapter.enc", _database.ReadStoredAdapter($"{a}.adapter.enc"));

        Assert.Contains("authentication failed", Assert.Throws<AtRestDecryptionException>(() => store.Read(b)).Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(StateBackends.All), MemberType = typeof(StateBackends))]
    public void Put_WithoutKey_StoresPlaintextThatAKeyedStoreStillServes(StateBackend backend)
    {
        Use(backend);
        byte[] checkpoint = Checkpoint();
        string sha256 = TestStateDatabase.Adapters(_state, _signer).Put(checkpoint, "run-1", 0);
        using AtRestCipher cipher = Cipher("key-a");

        Assert.True(_database!.StoredAdapterExists($"{sha256}.adapter"));
        Assert.Equal(checkpoint, TestStateDatabase.Adapters(_state, _signer, cipher).Read(sha256));
    }

    private AtRestCipher Cipher(string name)
    {
        string path = _dir.File(name);
        if (!File.Exists(path))
        {
            AtRestCipher.CreateKeyFile(path);
        }
        return AtRestCipher.FromKeyFile(path);
    }

    /// <summary>A real safetensors file: 8-byte little-endian header length, the JSON header, then 4 x 2 float32 values.</summary>
    private static byte[] Checkpoint()
    {
        byte[] header = Encoding.UTF8.GetBytes(HeaderJson);
        byte[] bytes = new byte[8 + header.Length + 32];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (int i = 0; i < 8; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(8 + header.Length + 4 * i), 0.25f * (i + 1));
        }
        return bytes;
    }
}
