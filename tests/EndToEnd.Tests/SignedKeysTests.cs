using System.Security.Cryptography;
using Federated.Coordinator.Rounds;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Trust;
using Federated.Wire;
using Google.Protobuf;
using Grpc.Core;

namespace Federated.EndToEnd.Tests;

/// <summary>
/// SecAgg+ keys signed with each participant's identity key: the roster check every participant runs before it deals a
/// share (<see cref="KeyAdvertisement.VerifyRoster"/>, called by SecAggParticipant) refuses each way a coordinator could
/// substitute a participant's keys, with the federation's real certificates; and the coordinator refuses an
/// advertisement whose signature is not the caller's.
/// </summary>
public sealed class SignedKeysTests(CoordinatorFixture coordinator) : IClassFixture<CoordinatorFixture>
{
    private static readonly RoundRef s_round = new() { RunId = "signed-run", Round = 2 };

    [Fact]
    public void VerifyRoster_HonestRoster_Passes()
    {
        using Peers peers = Peers.Load(coordinator);

        KeyAdvertisement.VerifyRoster(peers.Manifest, peers.Roster(), peers.Trust);
    }

    [Theory]
    [InlineData("substituted encryption key", "not the ones bob signed")]
    [InlineData("substituted mask key", "not the ones bob signed")]
    [InlineData("keys signed for another round", "not the ones bob signed")]
    [InlineData("keys signed at another index", "not the ones bob signed")]
    [InlineData("another client's certificate and signature", "is carol's")]
    [InlineData("an engineer's certificate", "not client bob's")]
    [InlineData("a certificate from another CA", "is refused")]
    [InlineData("no signature", "no certificate or signature")]
    [InlineData("garbage certificate", "does not parse")]
    [InlineData("an index the manifest lacks", "does not")]
    public void VerifyRoster_SubstitutedKeys_RefusedNamingWhatFailed(string lie, string expected)
    {
        using Peers peers = Peers.Load(coordinator);
        AdvertiseKeysResponse roster = peers.Roster();
        ParticipantKeys bob = roster.Neighbours.Single(n => n.Participant.ClientId == "bob");
        // The coordinator's own keys, which it would like the others to encrypt bob's shares to.
        ByteString forged = Point();
        switch (lie)
        {
            case "substituted encryption key":
                bob.EncryptionPublicKey = forged;
                break;
            case "substituted mask key":
                bob.MaskPublicKey = forged;
                break;
            case "keys signed for another round":
                bob.KeySignature = Sign(peers.Bob, new RoundRef { RunId = s_round.RunId, Round = 3 }, 2, bob);
                break;
            case "keys signed at another index":
                bob.KeySignature = Sign(peers.Bob, s_round, 3, bob);
                break;
            case "another client's certificate and signature":
                bob.EncryptionPublicKey = forged;
                bob.Certificate = ByteString.CopyFrom(peers.Carol.Certificate.RawData);
                bob.KeySignature = ByteString.CopyFrom(KeyAdvertisement.Sign(peers.Carol.Certificate, s_round, 2, bob.EncryptionPublicKey.Span, bob.MaskPublicKey.Span));
                break;
            case "an engineer's certificate":
                bob.Certificate = ByteString.CopyFrom(peers.Engineer.Certificate.RawData);
                bob.KeySignature = ByteString.CopyFrom(KeyAdvertisement.Sign(peers.Engineer.Certificate, s_round, 2, bob.EncryptionPublicKey.Span, bob.MaskPublicKey.Span));
                break;
            case "a certificate from another CA":
                // Mallory's CA could name its client anything; the chain to the federation CA is what fails.
                bob.Certificate = ByteString.CopyFrom(peers.Mallory.Certificate.RawData);
                bob.KeySignature = ByteString.CopyFrom(KeyAdvertisement.Sign(peers.Mallory.Certificate, s_round, 2, bob.EncryptionPublicKey.Span, bob.MaskPublicKey.Span));
                break;
            case "no signature":
                bob.KeySignature = ByteString.Empty;
                break;
            case "garbage certificate":
                bob.Certificate = ByteString.CopyFrom(RandomNumberGenerator.GetBytes(300));
                break;
            default:
                bob.Participant.Index = 9;
                break;
        }

        var ex = Assert.Throws<InvalidDataException>(() => KeyAdvertisement.VerifyRoster(peers.Manifest, roster, peers.Trust));

        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AdvertiseKeys_SignedByAnotherIdentityOrUnsigned_InvalidArgumentAndTheRoundWaitsForTheRealOne()
    {
        SecAggRound round = coordinator.Host.Rounds.Start(new SecAggRoundPlan("signed-advertise", 1, ["alice", "bob"], 16, 32, Degree: 1, Threshold: 2, StageTimeout: TimeSpan.FromSeconds(30)));
        try
        {
            using EdgeIdentity alice = EdgeIdentity.Load(coordinator.Identity("alice"), coordinator.CaPath);
            using EdgeIdentity bob = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
            using var asAlice = new CoordinatorConnection(coordinator.Address, alice);
            var keys = new AdvertiseKeysRequest { Round = round.Ref, EncryptionPublicKey = Point(), MaskPublicKey = Point() };
            AdvertiseKeysRequest bobSigned = keys.Clone();
            bobSigned.KeySignature = ByteString.CopyFrom(KeyAdvertisement.Sign(bob.Certificate, round.Ref, 1, keys.EncryptionPublicKey.Span, keys.MaskPublicKey.Span));

            var unsigned = await Assert.ThrowsAsync<RpcException>(() => asAlice.Edge.AdvertiseKeysAsync(keys, asAlice.Call(CancellationToken.None)).ResponseAsync);
            var foreign = await Assert.ThrowsAsync<RpcException>(() => asAlice.Edge.AdvertiseKeysAsync(bobSigned, asAlice.Call(CancellationToken.None)).ResponseAsync);

            Assert.Equal(StatusCode.InvalidArgument, unsigned.StatusCode);
            Assert.Equal(StatusCode.InvalidArgument, foreign.StatusCode);
            Assert.Contains("key_signature", foreign.Status.Detail, StringComparison.Ordinal);
            Assert.False(round.HasSubmitted("alice"));
            Assert.Equal(RoundStage.AdvertiseKeys, round.Stage);
        }
        finally
        {
            coordinator.Host.Rounds.Finish(round);
        }
    }

    // The consistency check alice (index 1) runs before revealing, with bob (2) and carol (3) as neighbours and t = 3.
    [Theory]
    [InlineData("honest", null)]
    [InlineData("one neighbour signed another set", "consistency check: 2 of")]
    [InlineData("a signature listed twice", "consistency check: 2 of")]
    [InlineData("a signature by a stranger's key", "consistency check: 2 of")]
    [InlineData("told a neighbour dropped that the set lists", "inconsistent survivor sets")]
    [InlineData("told a neighbour survived that the set lacks", "does not list it")]
    [InlineData("a set without this participant", "does not contain this participant")]
    public void VerifySurvivorSet_Lies_RefusedBeforeAnyShareIsRevealed(string lie, string? expected)
    {
        using Peers peers = Peers.Load(coordinator);
        int[] set = [1, 2, 3];
        var certificates = new Dictionary<int, byte[]> { [2] = peers.Bob.Certificate.RawData, [3] = peers.Carol.Certificate.RawData };
        byte[] Sign(EdgeIdentity who, int[] survivors) => KeyAdvertisement.SignSurvivors(who.Certificate, s_round, survivors);
        var signatures = new List<(int, byte[])> { (2, Sign(peers.Bob, set)), (3, Sign(peers.Carol, set)) };
        int[] toldSurvived = [1, 2, 3], toldDropped = [];
        int[] checkedSet = set;
        switch (lie)
        {
            case "one neighbour signed another set":
                signatures[1] = (3, Sign(peers.Carol, [1, 3]));
                break;
            case "a signature listed twice":
                signatures[1] = signatures[0];
                signatures.Add(signatures[0]);
                break;
            case "a signature by a stranger's key":
                signatures[1] = (3, Sign(peers.Mallory, set));
                break;
            case "told a neighbour dropped that the set lists":
                (toldSurvived, toldDropped) = ([1, 3], [2]);
                break;
            case "told a neighbour survived that the set lacks":
                checkedSet = [1, 3];
                break;
            case "a set without this participant":
                checkedSet = [2, 3];
                (toldSurvived, toldDropped) = ([2, 3], []);
                break;
        }

        void Check() => KeyAdvertisement.VerifySurvivorSet(s_round, 1, checkedSet, toldSurvived, toldDropped, signatures, certificates, threshold: 3);

        if (expected is null)
        {
            Check();
        }
        else
        {
            var ex = Assert.Throws<InvalidDataException>(Check);
            Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task ConfirmSurvivors_BadSignatureTwiceOrNotASurvivor_RefusedAndTheRoundReleasesTheExactSum()
    {
        using ScriptedRound round = await ScriptedRound.StartAsync(coordinator, "confirm-run", 1, ["alice", "bob", "carol"]);
        ScriptedParticipant first = round.First;
        var statuses = new Dictionary<string, StatusCode>();

        uint[] sum = await round.RunAsync(beforeStage: async stage =>
        {
            if (stage != ScriptedStage.Unmask)
            {
                return;
            }
            int[] set = [.. round.Round.Survivors];
            byte[] wrongSet = KeyAdvertisement.SignSurvivors(first.Identity.Certificate, first.Round, set.Take(2));
            statuses["signed another set"] = await BadMessageTests.Status(() => first.Connection.Edge.ConfirmSurvivorsAsync(
                new ConfirmSurvivorsRequest { Round = first.Round, Signature = ByteString.CopyFrom(wrongSet) }, first.Connection.Call(default)).ResponseAsync);
            statuses["short signature"] = await BadMessageTests.Status(() => first.Connection.Edge.ConfirmSurvivorsAsync(
                new ConfirmSurvivorsRequest { Round = first.Round, Signature = ByteString.CopyFrom(new byte[10]) }, first.Connection.Call(default)).ResponseAsync);
        });

        Assert.Equal(round.ExpectedSum(), sum);
        Assert.Equal(StatusCode.InvalidArgument, statuses["signed another set"]);
        Assert.Equal(StatusCode.InvalidArgument, statuses["short signature"]);
    }

    private static ByteString Point()
    {
        using var key = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters p = key.ExportParameters(false);
        return ByteString.CopyFrom([0x04, .. p.Q.X!, .. p.Q.Y!]);
    }

    private static ByteString Sign(EdgeIdentity identity, RoundRef round, uint index, ParticipantKeys keys) =>
        ByteString.CopyFrom(KeyAdvertisement.Sign(identity.Certificate, round, index, keys.EncryptionPublicKey.Span, keys.MaskPublicKey.Span));

    // Alice's view of a round with bob (index 2) and carol (index 3), signed by their real identities.
    private sealed class Peers : IDisposable
    {
        private Peers(CoordinatorFixture coordinator)
        {
            Bob = EdgeIdentity.Load(coordinator.Identity("bob"), coordinator.CaPath);
            Carol = EdgeIdentity.Load(coordinator.Identity("carol"), coordinator.CaPath);
            Engineer = EdgeIdentity.Load(coordinator.Identity("engineer"), coordinator.CaPath);
            Mallory = EdgeIdentity.Load(Path.Combine(coordinator.RoguePki, "mallory.pfx"), Path.Combine(coordinator.RoguePki, Coordinator.Pki.FederationPki.CaCertificateFile));
            Trust = new FederationTrust(Bob.Ca, TimeProvider.System);
            Manifest = new RoundManifest { Round = s_round, Self = new ParticipantRef { Index = 1, ClientId = "alice" } };
            Manifest.Participants.Add(Manifest.Self);
            Manifest.Participants.Add(new ParticipantRef { Index = 2, ClientId = "bob" });
            Manifest.Participants.Add(new ParticipantRef { Index = 3, ClientId = "carol" });
        }

        public EdgeIdentity Bob { get; }

        public EdgeIdentity Carol { get; }

        public EdgeIdentity Engineer { get; }

        public EdgeIdentity Mallory { get; }

        public FederationTrust Trust { get; }

        public RoundManifest Manifest { get; }

        public static Peers Load(CoordinatorFixture coordinator) => new(coordinator);

        public AdvertiseKeysResponse Roster()
        {
            var roster = new AdvertiseKeysResponse();
            foreach ((EdgeIdentity identity, uint index) in new[] { (Bob, 2u), (Carol, 3u) })
            {
                var keys = new ParticipantKeys
                {
                    Participant = new ParticipantRef { Index = index, ClientId = identity.Name },
                    EncryptionPublicKey = Point(),
                    MaskPublicKey = Point(),
                    Certificate = ByteString.CopyFrom(identity.Certificate.RawData),
                };
                keys.KeySignature = Sign(identity, s_round, index, keys);
                roster.Neighbours.Add(keys);
            }
            return roster;
        }

        public void Dispose()
        {
            Bob.Dispose();
            Carol.Dispose();
            Engineer.Dispose();
            Mallory.Dispose();
        }
    }
}
