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
