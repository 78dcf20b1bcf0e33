using System.Security.Cryptography;
using System.Text.Json;
using Federated.Aggregation.Privacy;
using Federated.EdgeClient.Policy;
using Federated.EdgeClient.Transport;
using Federated.Protos.V1;
using Federated.Training.Lora;
using Federated.Training.Model;
using Federated.Training.Tokenization;
using Federated.Wire;
using Google.Protobuf;
using Xunit.Abstractions;

namespace Federated.EndToEnd.Tests;

/// <summary>A federation (clients, sybil identities, the adapter signer) and a tiny model, shared by the lying-coordinator tests.</summary>
public sealed class LyingFederationFixture : IDisposable
{
    private readonly TempDirectory _root = new();

    public LyingFederationFixture()
    {
        Federation = TestFederation.Create(_root.File("pki"), ["alice", "bob", "carol", "sybil1", "sybil2"]);
        Model = _root.File("tiny");
        TinyLlamaFactory.Write(Model, TinyLlamaFactory.DefaultConfig(vocabSize: ByteLevelTokenizerWriter.Write(Model)), seed: 23);
    }

    public TestFederation Federation { get; }

    /// <summary>A federation of its own, for a test that revokes certificates (every later CRL would carry them).</summary>
    public TestFederation FreshFederation() => TestFederation.Create(_root.File("pki-" + Guid.NewGuid().ToString("N")), ["alice", "bob", "carol", "mallet"]);

    public string Model { get; }

    public LoraSettings Lora { get; } = new(Rank: 2, TargetModules: ["q_proj"]);

    /// <summary>A fresh folder for one edge machine's ledger and kept CRL.</summary>
    public string Home(string name) => _root.File(name + "-" + Guid.NewGuid().ToString("N"));

    public void Dispose() => _root.Dispose();
}

/// <summary>
/// A scripted lying coordinator (<see cref="LyingCoordinator"/>: the real protocol over real mutual TLS, trusted by the
/// edge) tries each attack of issue 14 against real edge clients (the loop, worker and SecAgg+ participant that
/// `edge-client run` uses, with their own SQLite ledgers): each is refused, or bounded by the worst-case ledger.
/// </summary>
public sealed class LyingCoordinatorTests(LyingFederationFixture fixture, ITestOutputHelper output) : IClassFixture<LyingFederationFixture>
{
    private const double PolicyDelta = 1e-5;

    [Fact]
    public async Task ReInvite_RoundTheEdgeWasChargedFor_DeclinedReplayedRoundWithNoSecondUpload()
    {
        await using LyingCoordinator liar = await StartLiarAsync();
        await using EdgeMachine alice = Edge("alice", liar);
        var plan = new LyingRoundPlan("replay-run", 1, Edges: ["alice"], Sybils: ["bob"], Threshold: 2);
        LyingRound honest = liar.Open(plan);
        liar.Invite("alice", honest.Ref);
        EdgeOutcome first = await alice.NextOutcomeAsync();
        Assert.True(first.Result?.Participated, first.Error?.Message);
        await honest.Sum.WaitAsync(TimeSpan.FromMinutes(1));
        int honestUploads = honest.Uploads.Count(u => u.Index == honest.IndexOf("alice"));

        // The lie: round 1 of the run again, as a fresh round (new seeds, a newly signed manifest), then once more.
        LyingRound replay = liar.Open(plan);
        liar.Invite("alice", replay.Ref);
        liar.Invite("alice", replay.Ref);
        EdgeOutcome[] refused = [await alice.NextOutcomeAsync(), await alice.NextOutcomeAsync()];

        Assert.Equal(1, honestUploads);
        Assert.All(refused, r =>
        {
            Assert.False(r.Result?.Participated ?? true, r.Error?.Message);
            Assert.Equal(LocalPolicyGate.ReplayedRoundRule, r.Result!.DeclinedRule);
        });
        Assert.Equal(2, replay.Declines.Count);
        Assert.All(replay.Declines, d =>
        {
            Assert.Equal(("alice", DeclineReason.ReplayedRound, LocalPolicyGate.ReplayedRoundRule, 1UL), (d.Client, d.Request.Reason, d.Request.Rule, d.Request.LastChargedRound));
        });
        // Refused before anything was downloaded, trained, dealt or uploaded; one charge for the one release.
        Assert.Empty(replay.Uploads);
        Assert.Empty(replay.SharedKeys);
        Assert.Equal(1, liar.Downloads);
        Assert.Equal([1L], alice.Ledger.Charges.Select(c => c.Round));
        Assert.True(alice.Running);
    }

    [Fact]
    public async Task Survivors_DifferentSetsToDifferentClients_TheDeceivedEdgeRevealsNothingAndNoClientsTwoSecretsReachTheThreshold()
    {
        await using LyingCoordinator liar = await StartLiarAsync();
        // alice (1), bob (2), carol (3), t = 2: all upload; alice and carol are told carol survived (they reveal seed shares
        // of carol), bob that carol dropped (he would reveal a mask-key share of carol). With both secrets of carol the
        // coordinator would unmask her update.
        var plan = new LyingRoundPlan("split-run", 1, Edges: ["alice", "bob", "carol"], Sybils: [], Threshold: 2)
        {
            LieSurvivors = (index, truth) =>
            {
                if (index != 2)
                {
                    return truth;
                }
                var lie = new UploadMaskedInputResponse { ReceivedBytes = truth.ReceivedBytes };
                lie.Survivors.AddRange([1u, 2u]);
                lie.Dropped.Add(3u);
                lie.AllSurvivors.AddRange([1u, 2u]);
                return lie;
            },
        };
        LyingRound round = liar.Open(plan);
        string[] names = ["alice", "bob", "carol"];
        EdgeMachine[] edges = [.. names.Select(name => Edge(name, liar))];
        try
        {
            foreach (string name in names)
            {
                liar.Invite(name, round.Ref);
            }
            EdgeOutcome[] outcomes = await Task.WhenAll(edges.Select(e => e.NextOutcomeAsync()));

            // bob's consistency check fails (only his own signature is on the set he was told); he reveals nothing.
            var refusal = Assert.IsType<InvalidDataException>(outcomes[1].Error);
            Assert.Contains("consistency check: 1 of", refusal.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(round.Reveals, r => r.Index == 2);
            Assert.True(outcomes[0].Result?.Participated, outcomes[0].Error?.Message);
            Assert.True(outcomes[2].Result?.Participated, outcomes[2].Error?.Message);
            // What the coordinator collected: for no client both t seed shares and t mask-key shares.
            for (int owner = 1; owner <= 3; owner++)
            {
                int seedHolders = round.Reveals.Count(r => r.Request.SelfMaskShares.Any(s => s.OwnerIndex == owner));
                int keyHolders = round.Reveals.Count(r => r.Request.MaskKeyShares.Any(s => s.OwnerIndex == owner));
                Assert.False(seedHolders >= plan.Threshold && keyHolders >= plan.Threshold, $"the coordinator holds both secrets of participant {owner}");
            }
            Assert.All(round.Reveals, r => Assert.Empty(r.Request.MaskKeyShares));
            // Each edge uploaded once and paid for it once (the charge precedes the upload); the loops go on.
            Assert.All(edges, e => Assert.Single(e.Ledger.Charges));
            Assert.All(edges, e => Assert.True(e.Running));
        }
        finally
        {
            foreach (EdgeMachine edge in edges)
            {
                await edge.DisposeAsync();
            }
        }
    }

    [Theory]
    [InlineData("key replaced, the peer's signature kept", "not the ones bob signed")]
    [InlineData("key replaced, signed by another identity", "is carol's")]
    [InlineData("key replaced, no signature", "no certificate or signature")]
    public async Task Roster_PeerKeySubstituted_RefusedBeforeAnyShareIsDealtAndNothingCharged(string lie, string expected)
    {
        await using LyingCoordinator liar = await StartLiarAsync();
        using EdgeIdentity carol = EdgeIdentity.Load(fixture.Federation.Identity("carol"), fixture.Federation.CaPath);
        RoundRef roundRef = new() { RunId = "substitute-run", Round = 1 };
        var plan = new LyingRoundPlan(roundRef.RunId, roundRef.Round, Edges: ["alice"], Sybils: ["bob"], Threshold: 2)
        {
            LieRoster = (_, roster) =>
            {
                // The coordinator's own key in place of bob's, so that alice's shares for bob are encrypted to it.
                ParticipantKeys bob = roster.Neighbours.Single(n => n.Participant.ClientId == "bob");
                bob.EncryptionPublicKey = Point();
                if (lie.Contains("another identity", StringComparison.Ordinal))
                {
                    bob.Certificate = ByteString.CopyFrom(carol.Certificate.RawData);
                    bob.KeySignature = ByteString.CopyFrom(KeyAdvertisement.Sign(carol.Certificate, roundRef, bob.Participant.Index, bob.EncryptionPublicKey.Span, bob.MaskPublicKey.Span));
                }
                else if (lie.Contains("no signature", StringComparison.Ordinal))
                {
                    bob.KeySignature = ByteString.Empty;
                }
                return roster;
            },
        };
        LyingRound round = liar.Open(plan);
        await using EdgeMachine alice = Edge("alice", liar);

        liar.Invite("alice", round.Ref);
        EdgeOutcome outcome = await alice.NextOutcomeAsync();

        Assert.True(outcome.Error is not null, $"the edge went on: {outcome.Result?.DeclinedRule} {outcome.Result?.Message}");
        var refusal = Assert.IsType<InvalidDataException>(outcome.Error);
        Assert.Contains(expected, refusal.Message, StringComparison.Ordinal);
        Assert.Empty(round.SharedKeys);
        Assert.Empty(round.Uploads);
        Assert.Empty(alice.Ledger.Charges);
        Assert.True(alice.Running);
    }

    [Fact]
    public async Task Roster_PeerRevokedByTheManifestsOwnCrl_RefusedBeforeAnyShareIsDealtAndNothingCharged()
    {
        TestFederation federation = fixture.FreshFederation();
        await using LyingCoordinator liar = await StartLiarAsync(federation);
        // The coordinator keeps a revoked identity in the round (its keys genuinely signed by it): the CA-signed CRL the
        // manifest must carry names it, and the edge checks every roster certificate against that list.
        byte[] crl = federation.Revoke("mallet");
        LyingRound round = liar.Open(new LyingRoundPlan("revoked-peer-run", 1, Edges: ["alice"], Sybils: ["mallet"], Threshold: 2, crl));
        await using EdgeMachine alice = Edge("alice", liar, federation: federation);

        liar.Invite("alice", round.Ref);
        EdgeOutcome outcome = await alice.NextOutcomeAsync();

        Assert.True(outcome.Error is not null, $"the edge went on: {outcome.Result?.DeclinedRule} {outcome.Result?.Message}");
        var refusal = Assert.IsType<InvalidDataException>(outcome.Error);
        Assert.Contains("the roster's certificate for mallet is refused", refusal.Message, StringComparison.Ordinal);
        Assert.Contains("revoked", refusal.Message, StringComparison.Ordinal);
        Assert.Empty(round.SharedKeys);
        Assert.Empty(alice.Ledger.Charges);
        Assert.True(alice.Running);
    }

    [Fact]
    public async Task Sybils_TMinusOneSybilsAndOneHonestHolder_TheLedgerChargesTheWorstCaseOfItsOwnNoiseShare()
    {
        await using LyingCoordinator liar = await StartLiarAsync();
        // t = 3 of 3: two of them the coordinator's; their inputs are zeros, so the released sum is alice's update with
        // her own noise share (V / 3) alone.
        LyingRound round = liar.Open(new LyingRoundPlan("sybil-run", 1, Edges: ["alice"], Sybils: ["sybil1", "sybil2"], Threshold: 3));
        await using EdgeMachine alice = Edge("alice", liar);

        liar.Invite("alice", round.Ref);
        EdgeOutcome outcome = await alice.NextOutcomeAsync();
        uint[] sum = await round.Sum.WaitAsync(TimeSpan.FromMinutes(1));

        Assert.True(outcome.Result?.Participated, outcome.Error?.Message);
        Assert.Equal(round.Privacy.Quantizer.PaddedDimension, sum.Length);
        (double distributed, double ownShare) = Expected(round);
        Assert.Single(alice.Ledger.Charges);
        Assert.Equal(distributed, alice.Ledger.Spent(PolicyDelta, "sybil-run").Epsilon, 9);
        Assert.Equal(ownShare, alice.Ledger.WorstCaseEpsilon(PolicyDelta, "sybil-run"), 9);
        // What `edge-client ledger show --json` prints from the machine's file: both epsilons of the run.
        using (LocalPrivacyLedger reopened = LocalPrivacyLedger.Open(Path.Combine(alice.Home, LocalPrivacyLedger.FileName)))
        using (JsonDocument shown = JsonDocument.Parse(reopened.ToJson(PolicyDelta, DateTimeOffset.UtcNow)))
        {
            JsonElement run = Assert.Single(shown.RootElement.GetProperty("runs").EnumerateArray());
            Assert.Equal(distributed, run.GetProperty("epsilon").GetDouble(), 9);
            Assert.Equal(ownShare, run.GetProperty("worst_case_epsilon").GetDouble(), 9);
        }
        Assert.True(ownShare > 1.5 * distributed, $"own share {ownShare} vs distributed {distributed}");
    }

    [Fact]
    public async Task Sybils_WorstCaseCapBelowTheOwnSharePrice_DeclinedNamingTheRuleNothingTrainedOrCharged()
    {
        await using LyingCoordinator liar = await StartLiarAsync();
        LyingRound round = liar.Open(new LyingRoundPlan("sybil-cap-run", 1, Edges: ["alice"], Sybils: ["sybil1", "sybil2"], Threshold: 3));
        (double distributed, double ownShare) = Expected(round);
        // A cap the distributed price meets and the worst case does not.
        double cap = (distributed + ownShare) / 2;
        Assert.InRange(distributed, 0, cap);
        await using EdgeMachine alice = Edge("alice", liar, EdgeMachine.Policy(maxWorstCaseEpsilonPerRun: cap));

        liar.Invite("alice", round.Ref);
        EdgeOutcome outcome = await alice.NextOutcomeAsync();

        Assert.False(outcome.Result?.Participated ?? true, outcome.Error?.Message);
        Assert.Equal("max_worst_case_epsilon_per_run", outcome.Result!.DeclinedRule);
        (string client, DeclineRoundRequest decline) = Assert.Single(round.Declines);
        Assert.Equal(("alice", DeclineReason.Budget, "max_worst_case_epsilon_per_run"), (client, decline.Reason, decline.Rule));
        Assert.Null(alice.Model.Lora);
        Assert.Empty(round.Uploads);
        Assert.Empty(alice.Ledger.Charges);
    }

    [Fact]
    public async Task AdapterSigner_RevokedThenTheCrlDroppedOrRolledBack_EachRoundRefusedNothingTrainedOrCharged()
    {
        TestFederation federation = fixture.FreshFederation();
        await using LyingCoordinator liar = await StartLiarAsync(federation);
        // An older CRL (carol revoked) and the current one (the adapter signer revoked too), both signed by the CA.
        byte[] older = federation.Revoke("carol");
        byte[] current = federation.Revoke(TestFederation.AdapterSignerName);
        await using EdgeMachine alice = Edge("alice", liar, federation: federation);
        (byte[]? Crl, string Rule)[] lies = [(current, EdgeRevocationList.RevokedRule), (null, EdgeRevocationList.MissingRule), (older, EdgeRevocationList.RollbackRule)];

        for (int i = 0; i < lies.Length; i++)
        {
            LyingRound round = liar.Open(new LyingRoundPlan("revoked-signer-run", (uint)i + 1, Edges: ["alice"], Sybils: ["bob"], Threshold: 2, lies[i].Crl));
            liar.Invite("alice", round.Ref);
            EdgeOutcome outcome = await alice.NextOutcomeAsync();

            Assert.False(outcome.Result?.Participated ?? true, outcome.Error?.Message);
            Assert.Equal(lies[i].Rule, outcome.Result!.DeclinedRule);
            (string _, DeclineRoundRequest decline) = Assert.Single(round.Declines);
            Assert.Equal((DeclineReason.InvalidManifest, lies[i].Rule), (decline.Reason, decline.Rule));
            Assert.Empty(round.Uploads);
        }
        // Only the first round reached the download (refused on its signer); none was trained on or charged.
        Assert.Equal(1, liar.Downloads);
        Assert.Null(alice.Model.Lora);
        Assert.Empty(alice.Ledger.Charges);
        Assert.True(alice.Running);
    }

    private Task<LyingCoordinator> StartLiarAsync(TestFederation? federation = null) =>
        LyingCoordinator.StartAsync(federation ?? fixture.Federation, fixture.Model, fixture.Lora);

    private EdgeMachine Edge(string name, LyingCoordinator liar, LocalPolicy? policy = null, TestFederation? federation = null) =>
        EdgeMachine.Start(federation ?? fixture.Federation, name, fixture.Model, liar.Address, policy ?? EdgeMachine.Policy(), fixture.Home(name), Log);

    // One round's epsilon at the policy's delta: distributed (t shares of noise) and from the holder's own share alone.
    private static (double Distributed, double OwnShare) Expected(LyingRound round)
    {
        PrivacyPlan plan = PrivacyPlan.Create(round.Privacy.Parameters, RdpOrders.Default);
        return (RdpAnalysis.Epsilon(plan.Orders, [.. plan.RoundRdp], PolicyDelta).Epsilon, RdpAnalysis.Epsilon(plan.Orders, plan.OwnShareRoundRdp(), PolicyDelta).Epsilon);
    }

    private static ByteString Point()
    {
        using var key = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters p = key.ExportParameters(false);
        return ByteString.CopyFrom([0x04, .. p.Q.X!, .. p.Q.Y!]);
    }

    private void Log(string line)
    {
        try
        {
            output.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // The test already ended.
        }
    }
}
